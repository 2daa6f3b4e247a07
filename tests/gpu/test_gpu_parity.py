"""GPU layers against the CPU (NumPy) reference on random inputs and parameters, float32 and float64.

Forward tops, updated parameters (BatchNorm's running sums), bottom diffs, and parameter diffs
(which must ACCUMULATE onto what was there, as in Caffe) are compared for every configuration.
"""
from __future__ import annotations

import numpy as np
import pytest

from .gpu_testing import LAYER_CASES, LayerCase, assert_close, case_inputs, case_params, host, setup_layer

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-11}


def run_layer(case: LayerCase, device: str, dtype, xp, inputs, params, top_diffs=None, param_diffs=None):
    """Forward then backward (all bottoms); returns host copies of everything that came out."""
    layer, bottoms, tops = setup_layer(case, device, dtype, xp, inputs, params)
    layer.forward(bottoms, tops)
    result = {"top": [host(t.data) for t in tops], "param": [host(b.data) for b in layer.blobs]}
    if top_diffs is None:  # the CPU run draws them; the GPU run gets the same
        rs = np.random.default_rng(7)
        top_diffs = [rs.standard_normal(t.shape) for t in tops]
        param_diffs = [rs.standard_normal(b.shape) for b in layer.blobs]
    for t, d, w in zip(tops, top_diffs, layer.loss_weights):
        t.diff = xp.array(np.full(t.shape, w) if w else d, dtype=dtype)
    for b, d in zip(layer.blobs, param_diffs):
        b.diff = xp.array(d, dtype=dtype)  # a copy: the CPU run updates it in place
    layer.backward(tops, [True] * len(bottoms), bottoms)
    result["bottom_diff"] = [host(b.diff) for b in bottoms]
    result["param_diff"] = [host(b.diff) for b in layer.blobs]
    return result, top_diffs, param_diffs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.id for c in LAYER_CASES])
def test_gpu_matches_cpu(gpu, case: LayerCase, dtype) -> None:
    inputs = case_inputs(case, seed=3)
    shapes = [b.shape for b in setup_layer(case, "cpu", dtype, np, inputs)[0].blobs]
    params = case_params(case, shapes, seed=3)
    cpu, top_diffs, param_diffs = run_layer(case, "cpu", dtype, np, inputs, params)
    ours, _, _ = run_layer(case, "gpu", dtype, gpu, inputs, params, top_diffs, param_diffs)
    tol = TOLERANCE[dtype]
    for kind in ("top", "param", "bottom_diff", "param_diff"):
        assert len(ours[kind]) == len(cpu[kind])
        for i, (a, b) in enumerate(zip(ours[kind], cpu[kind])):
            assert a.shape == b.shape and a.dtype == b.dtype, f"{kind}[{i}]: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
            assert_close(a, b, tol, f"{case.id} {kind}[{i}]")


def test_parity_compares_something(gpu) -> None:
    """Guard against a vacuous parity test: a deliberately different GPU parameter must fail it."""
    case = next(c for c in LAYER_CASES if c.id == "conv3x3_pad1_batch2")
    inputs = case_inputs(case, seed=3)
    shapes = [b.shape for b in setup_layer(case, "cpu", np.float32, np, inputs)[0].blobs]
    params = case_params(case, shapes, seed=3)
    cpu, top_diffs, param_diffs = run_layer(case, "cpu", np.float32, np, inputs, params)
    params[0] = params[0] * 1.001
    ours, _, _ = run_layer(case, "gpu", np.float32, gpu, inputs, params, top_diffs, param_diffs)
    with pytest.raises(AssertionError):
        assert_close(ours["top"][0], cpu["top"][0], TOLERANCE[np.float32])
