"""Tiled restoration with a deploy net (the small golden MemNet), restore_image and tools/restore.py."""
import os
import re
import subprocess
import sys

import tracemalloc

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine import Net
from memnet_engine.core.weights import array_to_blob_proto
from memnet_engine.memnet import inference
from memnet_engine.memnet.imageops.io import ImageTooLarge
from memnet_engine.memnet.imageops import imresize, read_image, rgb2ycbcr, to_uint8, write_image, ycbcr2rgb
from memnet_engine.memnet.inference import restore, restore_image, tile_spans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")
DEPLOY = os.path.join(GOLDEN, "memnet_m2r2_c8_deploy.prototxt")
WEIGHTS = os.path.join(GOLDEN, "memnet_m2r2_c8_iter_4.caffemodel")
# memnet_m2r2_c8: conv1, 2 blocks x 2 recursions x two 3x3 convs, the 3x3 reconstruction -> 10 3x3 convs
RECEPTIVE_RADIUS = 10


@pytest.fixture(scope="module")
def net():
    return Net(DEPLOY, "TEST", weights=WEIGHTS)


@pytest.mark.parametrize("length,tile,overlap", [(256, 150, 16), (512, 150, 16), (70, 20, 10), (9, 20, 10), (33, 0, 5)])
def test_tile_spans_cover_the_axis(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (s0, e0, c0, d0), nxt in zip(spans, spans[1:] + [None]):
        assert c0 == max(0, s0 - overlap) and d0 == min(length, e0 + overlap)
        if nxt:
            assert nxt[0] == e0
    if tile > 0:  # MemNet's split: ceil(n / (tile + overlap)) equal cores
        assert len(spans) == -(-length // (tile + overlap))


def test_tiling_matches_one_pass_beyond_the_receptive_field(net):
    image = np.random.default_rng(0).random((70, 53)).astype(np.float32)
    whole = restore(net, image, tile=0)
    assert whole.shape == image.shape and whole.dtype == np.float32
    tiled = restore(net, image, tile=20, overlap=RECEPTIVE_RADIUS)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    short = restore(net, image, tile=20, overlap=RECEPTIVE_RADIUS // 2)
    assert np.abs(short - whole).max() > 1e-3  # too little context does change the result


def test_restore_image_colour_sr(net):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    out = restore_image(net, image, "sr", 3, tile=0)
    assert out.shape == (57, 69, 3) and out.dtype == np.uint8
    channels = imresize(rgb2ycbcr(image) / 255.0, 3)
    expected_y = to_uint8(restore(net, channels[..., 0], tile=0) * np.float32(255))
    chroma = to_uint8(np.float32(channels[..., 1:]) * np.float32(255))
    np.testing.assert_array_equal(out, ycbcr2rgb(np.dstack([expected_y, chroma])))
    gray_content = np.repeat(image[..., :1], 3, axis=2)  # Cb = Cr = 128 -> the result must stay gray
    out = restore_image(net, gray_content, "sr", 2, tile=0)
    assert np.abs(out.astype(int) - out[..., :1]).max() <= 1


def test_restore_image_gray_stays_gray(net):
    image = np.random.default_rng(2).integers(0, 256, (21, 18), dtype=np.uint8)
    out = restore_image(net, image, "denoise", tile=8, overlap=RECEPTIVE_RADIUS)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, to_uint8(restore(net, image / 255.0, tile=0) * np.float32(255)))
    assert restore_image(net, image, "sr", 2).shape == (42, 36)


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "restore.py"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def test_restore_tool_colour_and_gray(tmp_path):
    rng = np.random.default_rng(3)
    write_image(str(tmp_path / "c.png"), rng.integers(0, 256, (16, 12, 3), dtype=np.uint8))
    write_image(str(tmp_path / "g.bmp"), rng.integers(0, 256, (10, 14), dtype=np.uint8))
    done = run_tool("--task", "sr", "--scale", "2", "--model", DEPLOY, "--weights", WEIGHTS,
                    "--input", str(tmp_path / "c.png"), "--output", str(tmp_path / "c_x2.png"))
    assert done.returncode == 0, done.stderr
    assert read_image(str(tmp_path / "c_x2.png")).shape == (32, 24, 3)
    done = run_tool("--task", "jpeg", "--model", DEPLOY, "--weights", WEIGHTS,
                    "--input", str(tmp_path / "g.bmp"), "--output", str(tmp_path / "g_out.png"))
    assert done.returncode == 0, done.stderr
    assert read_image(str(tmp_path / "g_out.png")).shape == (10, 14)


def test_restore_tool_errors(tmp_path):
    done = run_tool("--task", "denoise", "--model", DEPLOY, "--weights", str(tmp_path / "missing.caffemodel"),
                    "--input", "x.png", "--output", str(tmp_path / "y.png"))
    assert done.returncode == 1 and "Traceback" not in done.stderr and "x.png" in done.stderr
    done = run_tool("--task", "sr", "--model", DEPLOY, "--weights", WEIGHTS, "--input", "x", "--output", "y")
    assert done.returncode == 2 and "--scale" in done.stderr


def test_restore_reports_each_tile_in_order(net):
    image = np.random.default_rng(4).random((40, 30)).astype(np.float32)
    calls = []
    restore(net, image, tile=12, overlap=4, on_tile=lambda done, total: calls.append((done, total)))
    total = len(tile_spans(40, 12, 4)) * len(tile_spans(30, 12, 4))
    assert total > 1 and calls == [(k, total) for k in range(total + 1)]


def test_restore_tool_shows_tiles_and_time(tmp_path, capsys):
    from memnet_engine.cli import restore as tool
    write_image(str(tmp_path / "g.png"), np.random.default_rng(5).integers(0, 256, (30, 40), dtype=np.uint8))
    assert tool.main(["--task", "denoise", "--model", DEPLOY, "--weights", WEIGHTS, "--input", str(tmp_path / "g.png"),
                      "--output", str(tmp_path / "o.png"), "--tile", "10", "--overlap", "4"]) == 0
    out, err = capsys.readouterr()
    tiles = len(tile_spans(30, 10, 4)) * len(tile_spans(40, 10, 4))
    assert f"{tiles}/{tiles}" in err and "tile" in err
    assert re.fullmatch(rf"wrote {re.escape(str(tmp_path / 'o.png'))}: gray 40x30 in \d+\.\d s on cpu\n", out)


@pytest.mark.parametrize("model, weights, message", [
    (os.path.join(GOLDEN, "memnet_m2r2_c8_train.prototxt"), WEIGHTS,
     r"is a training net \(HDF5Data layer 'data', EuclideanLoss layer 'loss_01', \.\.\.\); restoring needs its "
     r"deploy net .* made by: memnet-make-net --deploy --from-train \S+memnet_m2r2_c8_train.prototxt "
     r"-o memnet_m2r2_c8_train_deploy.prototxt"),
    (DEPLOY, "run/x_iter_4.solverstate",
     r"run/x_iter_4.solverstate is a solver state .* not weights: use the .caffemodel written next to it: "
     r"--weights run/x_iter_4.caffemodel"),
])
def test_wrong_files_get_their_remedy_named(tmp_path, capsys, model, weights, message):
    from memnet_engine.cli import restore as tool
    write_image(str(tmp_path / "g.png"), np.zeros((8, 8), np.uint8))
    assert tool.main(["--task", "denoise", "--model", model, "--weights", weights, "--input", str(tmp_path / "g.png"),
                      "--output", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "o.png").exists()


def test_solverstate_message_names_the_model_it_recorded(tmp_path):
    from memnet_engine.cli.model_loading import check_weights
    from memnet_engine.core.errors import WeightsError
    from memnet_engine.core.proto import caffe_pb2 as pb
    state = tmp_path / "s.solverstate"
    state.write_bytes(pb.SolverState(iter=4, learned_net="/runs/a/net_iter_4.caffemodel").SerializeToString())
    with pytest.raises(WeightsError, match=r"--weights /runs/a/net_iter_4.caffemodel$"):
        check_weights(str(state))
    check_weights(WEIGHTS)  # a .caffemodel passes


def test_device_option(tmp_path, capsys, monkeypatch):
    from memnet_engine.cli import model_loading, restore as tool
    args = tool.parse_args(["--task", "jpeg", "--model", "m", "--weights", "w", "--input", "i", "--output", "o",
                            "--device", "GPU:1"])
    assert args.device == "gpu:1"
    with pytest.raises(SystemExit) as usage:
        tool.parse_args(["--task", "jpeg", "--model", "m", "--weights", "w", "--input", "i", "--output", "o",
                         "--device", "tpu"])
    assert usage.value.code == 2 and "use cpu, gpu or gpu:ID" in capsys.readouterr().err
    monkeypatch.setattr(model_loading, "gpu_available", lambda: False)
    write_image(str(tmp_path / "g.png"), np.zeros((8, 8), np.uint8))
    assert tool.main(["--task", "jpeg", "--model", DEPLOY, "--weights", WEIGHTS, "--input", str(tmp_path / "g.png"),
                      "--output", str(tmp_path / "o.png"), "--device", "gpu"]) == 1
    err = capsys.readouterr().err
    assert "--device gpu: no CUDA GPU is available" in err and "pip install -e '.[gpu]'" in err


def other_weights(tmp_path, keep=None):
    """The golden weights with only the layers ``keep`` (None: a caffemodel of another net)."""
    model = me.caffe_pb2.NetParameter.FromString(open(WEIGHTS, "rb").read())
    if keep is None:
        model = me.caffe_pb2.NetParameter(name="other_net")
        array_to_blob_proto(np.ones(3, np.float32), model.layer.add(name="fc9").blobs.add())
    else:
        for i in reversed(range(len(model.layer))):
            if model.layer[i].blobs and model.layer[i].name not in keep:
                del model.layer[i]
    path = tmp_path / "w.caffemodel"
    path.write_bytes(model.SerializeToString())
    return str(path)


@pytest.mark.parametrize("keep, message", [
    (None, r"w.caffemodel \(net 'other_net', 1 layers with weights\) has no layer of net 'memnet_m2r2_c8'"),
    (["conv1", "bn_conv1"], r"w.caffemodel has no weights for \d+ layer\(s\) of net 'memnet_m2r2_c8': "),
])
def test_restore_and_evaluate_refuse_weights_that_do_not_fill_the_net(tmp_path, capsys, keep, message):
    from memnet_engine.cli import evaluate, restore as restore_cli
    weights = other_weights(tmp_path, keep)
    write_image(str(tmp_path / "in.png"), np.full((12, 12), 100, np.uint8))
    assert restore_cli.main(["--task", "denoise", "--model", DEPLOY, "--weights", weights, "--input",
                             str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png")]) == 1
    assert re.search("restore: error: .*" + message, capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()
    assert evaluate.main(["--task", "denoise", "--sigma", "30", "--method", "memnet", "--model", DEPLOY, "--weights",
                          weights, "--dataset", str(tmp_path)]) == 1
    assert re.search("evaluate: error: .*" + message, capsys.readouterr().err)


def test_restore_warns_of_nan_weights_and_strict_refuses_them(tmp_path, capsys):
    model = me.caffe_pb2.NetParameter.FromString(open(WEIGHTS, "rb").read())
    next(layer for layer in model.layer if layer.name == "conv1").blobs[0].data[0] = float("inf")
    (tmp_path / "inf.caffemodel").write_bytes(model.SerializeToString())
    write_image(str(tmp_path / "in.png"), np.full((12, 12), 100, np.uint8))
    args = ["--task", "denoise", "--model", DEPLOY, "--weights", str(tmp_path / "inf.caffemodel"), "--input",
            str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png")]
    from memnet_engine.cli import restore as restore_cli
    assert restore_cli.main(args) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: \S+inf.caffemodel: NaN or infinite weights in layer\(s\) conv1 \(--strict makes", err)
    assert restore_cli.main(args + ["--strict"]) == 1
    assert re.search(r"restore: error: \S+inf.caffemodel: NaN or infinite weights in layer\(s\) conv1",
                     capsys.readouterr().err)


def test_sr_is_upscaled_tile_by_tile_exactly_and_in_bounded_memory(net, monkeypatch):
    image = np.random.default_rng(3).integers(0, 256, (40, 37, 3), dtype=np.uint8)
    tiled = restore_image(net, image, "sr", 4, tile=24, overlap=RECEPTIVE_RADIUS)
    channels = imresize(rgb2ycbcr(image) / 255.0, 4)  # the whole upscaled image, as before
    expected_y = to_uint8(restore(net, channels[..., 0], tile=24, overlap=RECEPTIVE_RADIUS) * np.float32(255))
    chroma = to_uint8(np.float32(channels[..., 1:]) * np.float32(255))
    np.testing.assert_array_equal(tiled, ycbcr2rgb(np.dstack([expected_y, chroma])))
    # memory of the image pipeline alone (the net's tiles aside): the uint8 result and a tile at a time
    monkeypatch.setattr(inference, "run_net", lambda net, tile: tile.astype(np.float32))
    image = np.random.default_rng(4).integers(0, 256, (240, 200, 3), dtype=np.uint8)
    tracemalloc.start()
    out = restore_image(net, image, "sr", 4, tile=30, overlap=RECEPTIVE_RADIUS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    upscaled_in_double = out.size * 8  # what upscaling the whole image first held: 18.4 MB
    assert peak < upscaled_in_double / 2, peak


def test_restore_refuses_an_output_above_the_pixel_limit(net, monkeypatch):
    monkeypatch.setenv("MEMNET_MAX_PIXELS", str(100 * 100))
    image = np.zeros((40, 40), np.uint8)
    assert restore_image(net, image, "denoise").shape == (40, 40)
    with pytest.raises(ImageTooLarge, match=r"the restored image \(x3 of 40 x 40\) is 120 x 120 = 14,400 pixels, more "
                                            r"than the limit of 10,000 \(set MEMNET_MAX_PIXELS to allow more\)"):
        restore_image(net, image, "sr", 3)
