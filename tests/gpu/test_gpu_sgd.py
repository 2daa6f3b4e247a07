"""The fused SGD kernel over a net's flat learnable state against the CPU update, bit for bit
(several multiplier runs, frozen BatchNorm statistics, L1/L2, clipping, iter_size, non-finite flag)."""
from __future__ import annotations

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.prototxt import parse_text
from memnet_engine.core.solver.update import FlatSGD, UpdateSettings

from .gpu_testing import host

NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "a" type: "Convolution" bottom: "x" top: "a" param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "a" top: "a" }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "s" type: "Scale" bottom: "b" top: "b" param { lr_mult: 0.1 decay_mult: 3 } }
"""

SETTINGS = [
    dict(rate=0.01, weight_decay=1e-4, momentum=0.9, clip_scale=0.37, iter_scale=1.0, l1=False),
    dict(rate=0.001, weight_decay=5e-4, momentum=0.9, clip_scale=1.0, iter_scale=0.5, l1=True),
    dict(rate=0.1, weight_decay=0.0, momentum=0.0, clip_scale=1.0, iter_scale=1.0, l1=False),
]


def net_on(device: str, dtype) -> me.Net:
    return me.Net(parse_text(NET, me.caffe_pb2.NetParameter()), phase=me.TRAIN, device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("settings", SETTINGS, ids=[f"setting{i}" for i in range(len(SETTINGS))])
def test_fused_update_equals_the_cpu_update_bit_for_bit(gpu, dtype, settings) -> None:
    rs = np.random.default_rng(5)
    nets = {device: net_on(device, dtype) for device in ("cpu", "gpu")}
    size = nets["cpu"].param_buffer.size
    data, diff, history = (rs.standard_normal(size).astype(dtype) for _ in range(3))
    data[:3] = 0  # sign(0) = 0 for L1
    results = {}
    for device, net in nets.items():
        rule = FlatSGD(net.param_buffer)
        xp = net.param_buffer.xp
        net.param_buffer.data[...] = xp.asarray(data)
        net.param_buffer.diff[...] = xp.asarray(diff)
        rule.history[...] = xp.asarray(history)
        flag = xp.zeros(1, dtype)
        rule.apply(UpdateSettings(**{k: v if k == "l1" else dtype(v) for k, v in settings.items()}), flag)
        results[device] = [host(a) for a in (net.param_buffer.data, net.param_buffer.diff, rule.history, flag)]
    for name, ours, want in zip(("data", "diff", "history", "flag"), results["gpu"], results["cpu"]):
        np.testing.assert_array_equal(ours, want, err_msg=name)
    learned = nets["cpu"].param_buffer.learned
    assert not np.array_equal(results["cpu"][0][:learned], data[:learned])
    np.testing.assert_array_equal(results["cpu"][0][learned:], data[learned:])  # frozen: untouched
    np.testing.assert_array_equal(results["cpu"][2][learned:], history[learned:])


def test_a_non_finite_update_raises_the_flag(gpu) -> None:
    net = net_on("gpu", np.float32)
    net.param_buffer.diff[...] = 1
    rule, flag = FlatSGD(net.param_buffer), gpu.zeros(1, np.float32)
    ones = dict(weight_decay=np.float32(0), momentum=np.float32(0), clip_scale=np.float32(1),
                iter_scale=np.float32(1), l1=False)
    rule.apply(UpdateSettings(rate=np.float32(1), **ones), flag)
    assert host(flag)[0] == 0
    rule.apply(UpdateSettings(rate=np.float32(3e38), **ones), flag)
    assert host(flag)[0] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_gradient_sum_of_squares_is_one_reduction_over_the_flat_diff(gpu, dtype) -> None:
    rs = np.random.default_rng(2)
    nets = {device: net_on(device, dtype) for device in ("cpu", "gpu")}
    diff = rs.standard_normal(nets["cpu"].param_buffer.size).astype(dtype)
    sums = {}
    for device, net in nets.items():
        xp = net.param_buffer.xp
        net.param_buffer.diff[...] = xp.asarray(diff)
        out = xp.zeros(1, dtype)
        FlatSGD(net.param_buffer).sum_of_squares(out)
        sums[device] = host(out)[0]
    np.testing.assert_allclose(sums["gpu"], (diff.astype(np.float64) ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(sums["cpu"], sums["gpu"], rtol=1e-6)
