"""The fused SGD kernel against Caffe's update written out in NumPy (same dtype, same operation order)."""
from __future__ import annotations

import numpy as np
import pytest

from .gpu_testing import host
from memnet_engine.core.cuda.sgd import sgd_update_gpu


def reference_update(data, diff, history, *, local_rate, local_decay, momentum, l1, scale):
    dt = data.dtype.type
    diff = diff.copy()
    if scale != 1:
        diff = diff * dt(scale)
    if local_decay:
        diff = diff + dt(local_decay) * (np.sign(data) if l1 else data)
    history = dt(local_rate) * diff + dt(momentum) * history
    return data - history, history.copy(), history


SETTINGS = [
    dict(local_rate=0.01, local_decay=1e-4, momentum=0.9, l1=False, scale=1.0),
    dict(local_rate=0.001, local_decay=5e-4, momentum=0.9, l1=True, scale=1.0),
    dict(local_rate=0.1, local_decay=0.0, momentum=0.0, l1=False, scale=0.25),
    dict(local_rate=0.05, local_decay=1e-3, momentum=0.5, l1=True, scale=3.0),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("settings", SETTINGS, ids=[f"setting{i}" for i in range(len(SETTINGS))])
def test_sgd_kernel_matches_formula(gpu, dtype, settings) -> None:
    rs = np.random.default_rng(5)
    shape = (7, 3, 3, 5)
    data = rs.standard_normal(shape).astype(dtype)
    data.ravel()[:3] = 0  # sign(0) = 0 for L1
    diff = rs.standard_normal(shape).astype(dtype)
    history = rs.standard_normal(shape).astype(dtype)
    expected = reference_update(data, diff, history, **settings)
    arrays = [gpu.array(a) for a in (data, diff, history)]
    sgd_update_gpu(*arrays, **settings)
    for name, got, want in zip(("data", "diff", "history"), arrays, expected):
        np.testing.assert_array_equal(host(got), want, err_msg=name)


def test_sgd_refuses_mismatched_arrays(gpu) -> None:
    a = gpu.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="does not match"):
        sgd_update_gpu(a, gpu.zeros((4, 3), np.float32), gpu.zeros((3, 4), np.float32), local_rate=0.1,
                       local_decay=0, momentum=0.9)
    with pytest.raises(ValueError, match="C-contiguous"):
        sgd_update_gpu(a.T, gpu.zeros((4, 3), np.float32), gpu.zeros((4, 3), np.float32), local_rate=0.1,
                       local_decay=0, momentum=0.9)
