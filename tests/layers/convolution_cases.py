"""Checks shared by the tests of the CPU's fast convolution algorithms (Winograd's, the direct sum's): a step of
a layer with or without them, their float32 error, and their steady state."""
from __future__ import annotations

import numpy as np
from conftest import traced_memory_of
from test_convolution import conv_text

KEYS = ("top", "bottom diff", "weight diff", "bias diff")


def run_layer(layer, bottoms, tops, dy, fast: bool) -> list:
    """Forward and backward with the workspace's ``fast_convolution`` set to ``fast`` (gradients accumulated
    onto ones); returns top, bottom diff and param diffs."""
    layer._scratch.fast_convolution = fast
    layer.forward(bottoms, tops)
    tops[0].diff = dy.copy()
    for blob in layer.blobs:
        blob.diff = np.ones(blob.shape, blob.data.dtype)
    layer.backward(tops, [True], bottoms)
    return [tops[0].data.copy(), bottoms[0].diff.copy()] + [b.diff.copy() for b in layer.blobs]


def assert_equals_im2col_gemm_to_rounding_in_float64(layer, bottoms, tops) -> None:
    """With the fast algorithms, top and gradients are finite and equal im2col + GEMM's to rounding; the weight
    gradient is not empty."""
    dy = np.random.default_rng(3).standard_normal(tops[0].shape)
    ours, gemm = run_layer(layer, bottoms, tops, dy, True), run_layer(layer, bottoms, tops, dy, False)
    for key, a, b in zip(KEYS, ours, gemm):
        assert np.all(np.isfinite(a)), key
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1, np.abs(b).max()), err_msg=key)
    assert np.abs(ours[2] - 1).max() > 0.1


def assert_float32_is_within_the_golden_tolerance(make_layer, options: str, shape: tuple, num_output: int,
                                                  algorithm: str) -> None:
    """Against float64, float32 outputs and gradients are within the golden unit tolerance (1e-5 of the largest
    value), with the fast algorithm (the layer's property ``algorithm``, e.g. "uses_direct", is True) as with
    im2col + GEMM."""
    layer64, bottoms64, tops64 = make_layer(conv_text(options, num_output), [shape])
    dy = np.random.default_rng(4).standard_normal(tops64[0].shape)
    exact = run_layer(layer64, bottoms64, tops64, dy, False)
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape], dtype=np.float32)
    for blob, blob64 in zip(layer.blobs + bottoms, layer64.blobs + bottoms64):
        blob.data = blob64.data.astype(np.float32)
    for fast in (True, False):
        results = run_layer(layer, bottoms, tops, dy.astype(np.float32), fast)
        assert getattr(layer, algorithm) == fast
        for key, a, b in zip(KEYS, results, exact):
            error = np.abs(a - b).max() / max(1, np.abs(b).max())
            assert error < 1e-5, (fast, key, error)


def assert_steady_state_steps_allocate_no_large_buffers(layer, bottoms, tops) -> None:
    """After a first step, forward + backward take their scratch from the workspace: a step's temporaries stay
    far below one activation (the bottom), and neither traced memory nor the workspace grows."""
    dy = np.random.default_rng(5).standard_normal(tops[0].shape).astype(tops[0].data.dtype)
    activation_bytes = bottoms[0].data.nbytes

    def step():
        layer.forward(bottoms, tops)
        tops[0].diff = dy
        layer.backward(tops, [True], bottoms)

    step()
    workspace = layer._scratch.nbytes
    assert workspace > 0
    growth, peak = traced_memory_of(step)
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"
    assert peak < activation_bytes // 8, f"a step peaked {peak} bytes higher"
    assert layer._scratch.nbytes == workspace
    assert np.isfinite(bottoms[0].diff).all() and np.abs(layer.blobs[0].diff).sum() > 0
