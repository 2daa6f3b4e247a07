"""Tiled restoration with a deploy net (the small golden MemNet), restore_image and tools/restore.py."""
import os
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
