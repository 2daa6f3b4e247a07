"""Convolution by Winograd's F(2x2, 3x3) on the CPU (core/cpu/winograd.py): the same results as im2col + GEMM
(float64: to rounding; float32: within the golden tolerance), at every chunk and image edge, its gradient
checks, where the layer chooses it, and steady-state steps that allocate nothing large."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import traced_memory_of
from test_convolution import conv_text

from memnet_engine.core.cpu import winograd
from memnet_engine.core.gradcheck import check_layer

# (bottom shape, num_output, pad): odd and even sizes, 1-pixel outputs, pads 0 to 2, K != C
SHAPES = {
    "odd_31": ((2, 8, 31, 31), 8, 1),
    "even_rect": ((3, 16, 6, 10), 8, 1),
    "pad0_odd_out": ((1, 8, 9, 8), 12, 0),
    "pad2": ((2, 8, 5, 7), 8, 2),
    "one_output_row": ((2, 8, 3, 11), 8, 0),
    "single_pixel": ((1, 8, 1, 1), 8, 1),
}


def run_layer(layer, bottoms, tops, dy, use_winograd: bool) -> list:
    """Forward and backward (gradients accumulated onto ones); returns top, bottom diff and param diffs."""
    layer.workspace = None
    layer._scratch.fast_convolution = use_winograd
    assert layer.uses_winograd == use_winograd
    layer.forward(bottoms, tops)
    tops[0].diff = dy.copy()
    for blob in layer.blobs:
        blob.diff = np.ones(blob.shape, blob.data.dtype)
    layer.backward(tops, [True], bottoms)
    return [tops[0].data.copy(), bottoms[0].diff.copy()] + [b.diff.copy() for b in layer.blobs]


@pytest.mark.parametrize("tiny_chunks", [False, True], ids=["default_chunks", "one_tile_row_chunks"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_equals_im2col_gemm_to_rounding_in_float64(make_layer, monkeypatch, name, tiny_chunks) -> None:
    shape, num_output, pad = SHAPES[name]
    if tiny_chunks:
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    layer, bottoms, tops = make_layer(conv_text(f"kernel_size: 3 pad: {pad}", num_output), [shape])
    dy = np.random.default_rng(3).standard_normal(tops[0].shape)
    ours, gemm = run_layer(layer, bottoms, tops, dy, True), run_layer(layer, bottoms, tops, dy, False)
    for key, a, b in zip(("top", "bottom diff", "weight diff", "bias diff"), ours, gemm):
        assert np.all(np.isfinite(a)), key
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1, np.abs(b).max()), err_msg=key)
    assert np.abs(ours[2] - 1).max() > 0.1  # the weight gradient is not empty


def test_float32_error_is_as_small_as_the_direct_sums(make_layer) -> None:
    """Against float64, Winograd's float32 outputs and gradients are within the golden unit tolerance
    (1e-5 of the largest value), as im2col + GEMM's are."""
    layer64, bottoms64, tops64 = make_layer(conv_text("kernel_size: 3 pad: 1", 64), [(2, 64, 20, 17)])
    dy = np.random.default_rng(4).standard_normal(tops64[0].shape)
    exact = run_layer(layer64, bottoms64, tops64, dy, False)
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 64), [(2, 64, 20, 17)], dtype=np.float32)
    for blob, blob64 in zip(layer.blobs + bottoms, layer64.blobs + bottoms64):
        blob.data = blob64.data.astype(np.float32)
    for use_winograd in (True, False):
        for key, a, b in zip(("top", "bottom diff", "weight diff", "bias diff"),
                             run_layer(layer, bottoms, tops, dy.astype(np.float32), use_winograd), exact):
            error = np.abs(a - b).max() / max(1, np.abs(b).max())
            assert error < 1e-5, (use_winograd, key, error)


@pytest.mark.parametrize("options, channels, chosen", [
    ("kernel_size: 3 pad: 1", 8, True),
    ("kernel_size: 3 pad: 0", 16, True),
    ("kernel_size: 3 pad: 3", 8, False),  # its input gradient would need a negative pad
    ("kernel_size: 3 pad: 1", 4, False),  # too few channels: im2col's one GEMM is faster
    ("kernel_size: 3 pad: 1 stride: 2", 8, False),
    ("kernel_size: 3 pad: 2 dilation: 2", 8, False),
    ("kernel_size: 3 pad: 1 group: 2", 8, False),
    ("kernel_size: 1", 8, False),
    ("kernel_h: 3 kernel_w: 1 pad_h: 1", 8, False),
])
def test_the_layer_chooses_winograd_for_3x3_stride1_convolutions(make_layer, options, channels, chosen) -> None:
    layer, _, _ = make_layer(conv_text(options, 8), [(1, channels, 6, 6)])
    assert layer.uses_winograd == chosen
    layer._scratch.fast_convolution = False
    assert not layer.uses_winograd


def test_gradient_check(make_layer) -> None:
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 8), [(2, 8, 5, 6)])
    assert layer.uses_winograd
    check_layer(layer, bottoms, tops).assert_ok()


def test_steady_state_steps_allocate_no_large_buffers(make_layer) -> None:
    """Transformed tiles live in the workspace; a step's temporaries (transformed kernels, per-image bias sums)
    stay far below one activation, and nothing grows."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 16), [(4, 16, 64, 64)],
                                      dtype=np.float32)
    dy = np.random.default_rng(5).standard_normal(tops[0].shape).astype(np.float32)
    activation_bytes = bottoms[0].count * 4

    def step():
        layer.forward(bottoms, tops)
        tops[0].diff = dy
        layer.backward(tops, [True], bottoms)

    step()
    assert layer.uses_winograd and layer._scratch.nbytes > 0
    workspace = layer._scratch.nbytes
    growth, peak = traced_memory_of(step)
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"
    assert peak < activation_bytes // 8, f"a step peaked {peak} bytes higher"
    assert layer._scratch.nbytes == workspace
    assert np.isfinite(bottoms[0].diff).all() and np.abs(layer.blobs[0].diff).sum() > 0


def test_the_kernels_run_where_numba_cannot_cache_them(tmp_path) -> None:
    """A read-only install and home leave numba no cache folder (simulated: a locator that never applies);
    the kernels then compile uncached instead of failing the import."""
    code = ("import numpy as np\n"
            "from memnet_engine.core.cpu import winograd\n"
            "from memnet_engine.core.workspace import Workspace\n"
            "x = np.ones((1, 8, 5, 5), np.float32); w = np.ones((8, 8, 3, 3), np.float32); y = np.empty_like(x)\n"
            "winograd.convolve(x, winograd.kernel_transform(w), (1, 1), y, None, Workspace())\n"
            "print(y[0, 0, 2, 2], y[0, 0, 0, 0])\n")
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="ZipCacheLocator")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["72.0", "32.0"]  # 8 channels x 9 taps inside; x 4 taps in the corner
