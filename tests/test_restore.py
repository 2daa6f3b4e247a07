"""Tiled restoration with a deploy net (the small golden MemNet), restore_image and tools/restore.py."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from memnet_engine import Net
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
