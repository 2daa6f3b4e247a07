"""The fused BatchNorm -> Scale -> ReLU kernels (kernels/bn_scale_relu.cu) against the three layers on the CPU,
and how few launches they take."""
from __future__ import annotations

import numpy as np
import pytest

from fused_unit_cases import CONFIGS, pass_arrays, unit_net  # tests/fused_unit_cases.py

from .gpu_testing import assert_close


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-10)], ids=["float32", "float64"])
@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_fused_unit_on_gpu_matches_the_three_layers_on_cpu(gpu, options, dtype, tol) -> None:
    fused = unit_net(dtype=dtype, device="gpu", **options)
    assert [u.layer.name for u in fused.schedule.units.values()] == ["bn+sc+relu"]
    layered = unit_net(dtype=dtype, **options)
    layered.fuse_units(False)
    ours, theirs = pass_arrays(fused), pass_arrays(layered)
    for key, reference in theirs.items():
        assert_close(ours[key], reference, tol, key)


def test_fused_unit_takes_two_launches_each_way(gpu, monkeypatch) -> None:
    """Forward: statistics (one launch) + one apply pass; backward: one reduction (one) + one apply pass."""
    if not hasattr(gpu, "RawKernel"):
        pytest.skip("launches are counted on the emulator")
    net = unit_net(device="gpu", dtype=np.float32)
    unit = next(iter(net.schedule.units.values()))
    bottoms, tops = [net.blobs["a"]], [net.blobs["h"]]
    net.forward()
    launched = []
    call = gpu.RawKernel.__call__
    monkeypatch.setattr(gpu.RawKernel, "__call__", lambda self, *a, **k: (launched.append(self.kernel.name),
                                                                           call(self, *a, **k))[1])
    unit.layer.forward(bottoms, tops)
    assert launched == ["bsr_stats<float>", "bsr_forward<float>"]
    launched.clear()
    unit.layer.backward(tops, [True], bottoms)
    assert launched == ["bsr_grad_sums<float>", "bsr_backward<float>"]
    launched.clear()
    unit.layer.recompute_outputs(bottoms, tops)
    assert launched == ["bsr_forward<float>"]
