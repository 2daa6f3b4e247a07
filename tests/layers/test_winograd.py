"""Convolution by Winograd's F(2x2, 3x3) on the CPU (core/cpu/winograd.py): the same results as im2col + GEMM
(float64: to rounding; float32: within the golden tolerance), at every chunk and image edge, its gradient
checks, where the layer chooses it, and steady-state steps that allocate nothing large."""
import os
import subprocess
import sys

import numpy as np
import pytest
from convolution_cases import (assert_equals_im2col_gemm_to_rounding_in_float64,
                               assert_float32_is_within_the_golden_tolerance,
                               assert_steady_state_steps_allocate_no_large_buffers)
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


@pytest.mark.parametrize("tiny_chunks", [False, True], ids=["default_chunks", "one_tile_row_chunks"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_equals_im2col_gemm_to_rounding_in_float64(make_layer, monkeypatch, name, tiny_chunks) -> None:
    shape, num_output, pad = SHAPES[name]
    if tiny_chunks:
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    layer, bottoms, tops = make_layer(conv_text(f"kernel_size: 3 pad: {pad}", num_output), [shape])
    assert layer.uses_winograd
    assert_equals_im2col_gemm_to_rounding_in_float64(layer, bottoms, tops)


def test_float32_error_is_as_small_as_the_direct_sums(make_layer) -> None:
    assert_float32_is_within_the_golden_tolerance(make_layer, "kernel_size: 3 pad: 1", (2, 64, 20, 17), 64,
                                                  "uses_winograd")


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
    """Transformed tiles live in the workspace; a step's temporaries are transformed kernels and per-image bias
    sums."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 16), [(4, 16, 64, 64)],
                                      dtype=np.float32)
    assert layer.uses_winograd
    assert_steady_state_steps_allocate_no_large_buffers(layer, bottoms, tops)


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


def test_a_channel_slice_input_gives_the_contiguous_copys_results() -> None:
    """A zero-copy Concat's input is a channel slice: read through a C-typed view of its parent, with and
    without the BatchNorm prologue, it gives bit-identical outputs and weight gradients, in place of a copy."""
    from memnet_engine.core.workspace import Workspace
    rng = np.random.default_rng(11)
    parent = rng.standard_normal((2, 24, 7, 9)).astype(np.float32)
    sliced, copy = parent[:, 8:16], np.ascontiguousarray(parent[:, 8:16])
    u = winograd.kernel_transform(rng.standard_normal((12, 8, 3, 3)).astype(np.float32))
    dy = rng.standard_normal((2, 12, 7, 9)).astype(np.float32)
    vectors = [rng.uniform(0.5, 1.5, 8).astype(np.float32) for _ in range(4)]
    for prologue in (None, (*vectors, 0.1)):
        results = []
        for x in (sliced, copy):
            out = np.empty((2, 12, 7, 9), np.float32)
            winograd.convolve(x, u, (1, 1), out, None, Workspace(), prologue)
            results.append((out, winograd.weight_gradient(x, dy, (1, 1), Workspace(), prologue)))
        for a, b in zip(*results):
            assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
            np.testing.assert_array_equal(a, b)


def test_the_numpy_dot_fallback_gives_the_openblas_results(monkeypatch) -> None:
    """Where NumPy links no OpenBLAS GEMM the kernels' products go through numba's np.dot: same results to
    float32 rounding."""
    from memnet_engine.core.workspace import Workspace
    rng = np.random.default_rng(5)
    x, dy = (rng.standard_normal((2, 8, 9, 7)).astype(np.float32) for _ in range(2))
    u = winograd.kernel_transform(rng.standard_normal((8, 8, 3, 3)).astype(np.float32))
    results = []
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(winograd.blas, "gemm", lambda dtype: None)
        out = np.full(x.shape, np.nan, np.float32)
        winograd.convolve(x, u, (1, 1), out, None, Workspace())
        results.append((out, winograd.weight_gradient(x, dy, (1, 1), Workspace())))
    for openblas, numpy_dot in zip(*results):
        assert np.all(np.isfinite(openblas)) and np.abs(openblas).max() > 0
        np.testing.assert_allclose(numpy_dot, openblas, rtol=1e-5, atol=1e-5)


def test_shared_weights_are_transformed_once_per_pass_and_again_after_they_change(monkeypatch) -> None:
    """Convolutions sharing weights (MemNet's recursions) transform them once per forward and once per backward
    pass; a change of the weights between passes is seen by the next one."""
    import memnet_engine as me
    from google.protobuf import text_format
    conv = ('layer {{ name: "{0}" type: "Convolution" bottom: "{1}" top: "{2}" param {{ name: "w" }} '
            'param {{ name: "b" }} convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 '
            'weight_filler {{ type: "gaussian" std: 0.1 }} }} }}\n')
    text = ('force_backward: true\nlayer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 '
            'dim: 6 dim: 6 } } }\n' + conv.format("c1", "x", "y") + conv.format("c2", "y", "z"))
    net = me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=me.TRAIN)
    assert all(layer.uses_winograd for layer in net.layers[1:])
    transforms = []
    original = winograd.kernel_transform
    monkeypatch.setattr(winograd, "kernel_transform",
                        lambda weights, turned=False: transforms.append(turned) or original(weights, turned=turned))
    net.blobs["x"].data[...] = np.random.default_rng(3).standard_normal(net.blobs["x"].shape)
    first = net.forward()["z"].copy()
    net.backward(z=np.ones_like(first))
    assert transforms == [False, True]
    net.params["c1"][0].data[...] *= 2  # both convolutions' kernels (no bias): z = 4 times what it was
    np.testing.assert_allclose(net.forward()["z"], 4 * first, rtol=1e-5, atol=1e-6)
    assert transforms == [False, True, False]


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_the_weight_gradient_with_the_input_gradient_gives_both_alone(pad) -> None:
    """weight_gradient(..., turned, dx) computes the input gradient in the same pass where the tiles coincide
    (pad 1) and after it otherwise: bit-identical to weight_gradient and convolve called one after the other,
    with and without the BatchNorm prologue."""
    from memnet_engine.core.workspace import Workspace
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 8, 9, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 12, 9 + 2 * pad - 2, 7 + 2 * pad - 2)).astype(np.float32)
    turned = winograd.kernel_transform(rng.standard_normal((12, 8, 3, 3)).astype(np.float32), turned=True)
    vectors = [rng.uniform(0.5, 1.5, 8).astype(np.float32) for _ in range(4)]
    for prologue in (None, (*vectors, 0.1)):
        dx_alone, dx_with = (np.full(x.shape, np.nan, np.float32) for _ in range(2))
        alone = winograd.weight_gradient(x, dy, (pad, pad), Workspace(), prologue)
        winograd.convolve(dy, turned, (2 - pad, 2 - pad), dx_alone, None, Workspace())
        together = winograd.weight_gradient(x, dy, (pad, pad), Workspace(), prologue, turned, dx_with)
        assert np.all(np.isfinite(dx_with)) and np.abs(together).max() > 0
        np.testing.assert_array_equal(together, alone)
        np.testing.assert_array_equal(dx_with, dx_alone)
