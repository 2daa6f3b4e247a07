"""The fused BatchNorm -> Scale -> ReLU unit gives the three Caffe layers' numbers, and runs only where it may."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from fused_unit_cases import CONFIGS, pass_arrays, unit_net
from memnet_engine.core.gradcheck import check_net_params

@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_fused_unit_equals_the_three_layers_to_rounding_on_the_cpu(options) -> None:
    """float64 nets: the fused kernels sum in another order than NumPy (8 running sums), nothing else differs."""
    fused = unit_net(**options)
    layered = unit_net(**options)
    layered.fuse_units(False)
    assert [u.layer.name for u in fused.schedule.units.values()] == ["bn+sc+relu"] and not layered.schedule.units
    ours, theirs = pass_arrays(fused), pass_arrays(layered)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert np.all(np.isfinite(ours[key])), key
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-14 * max(1, np.abs(theirs[key]).max()),
                                   err_msg=key)
    assert np.abs(ours["pdiff/sc/0"]).max() > 0 and (options.get("force", True) is False or
                                                      np.abs(ours["diff/x"]).max() > 0)


def test_fused_unit_parameter_gradients_pass_the_gradient_check() -> None:
    for options in ({}, {"slope": 0.1, "bias": False}):
        check_net_params(unit_net(**options)).assert_ok()


def test_planned_pass_recomputes_the_unit_output_and_equals_pycaffe_pass() -> None:
    nets = {"planned": unit_net(), "pycaffe": unit_net()}
    for keep, net in zip((False, True), nets.values()):
        net.forward()  # shapes the output, whose diff we set
        net.blobs["y"].diff[...] = np.random.default_rng(9).standard_normal(net.blobs["y"].shape)
        net.clear_param_diffs()
        net.forward_backward(keep_intermediates=keep)
    planned, pycaffe = nets.values()
    np.testing.assert_array_equal(planned.blobs["x"].diff, pycaffe.blobs["x"].diff)
    for name, params in pycaffe.params.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(planned.params[name][i].diff, p.diff, err_msg=f"{name}/{i}")
    with pytest.raises(me.ReleasedBlobError, match="blob 'h'"):
        planned.blobs["h"].data
    steps = planned.schedule.forward_steps(0, len(planned.layers) - 1)
    plan = planned.schedule.plan(planned, steps, planned._kept(), backward=True)
    unit = next(s for s, step in enumerate(steps) if step.layer.type == "BatchNorm+Scale+ReLU")
    assert plan.recompute_before_backward[unit + 1] == [unit]  # before the next convolution's backward
    assert "h" in plan.free_after_forward[unit + 1]  # so h is not kept between forward and backward


UNFUSABLE = {
    "bn_in_place": ('layer { name: "bn" type: "BatchNorm" bottom: "a" top: "a" }\n'
                    'layer { name: "sc" type: "Scale" bottom: "a" top: "a" }\n'
                    'layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }', "a"),
    "relu_not_in_place": ('layer { name: "bn" type: "BatchNorm" bottom: "a" top: "h" }\n'
                          'layer { name: "sc" type: "Scale" bottom: "h" top: "h" }\n'
                          'layer { name: "relu" type: "ReLU" bottom: "h" top: "r" }', "r"),
    "scalar_scale": ('layer { name: "bn" type: "BatchNorm" bottom: "a" top: "h" }\n'
                     'layer { name: "sc" type: "Scale" bottom: "h" top: "h" scale_param { num_axes: 0 } }\n'
                     'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }', "h"),
    "loss_weight_on_relu": ('layer { name: "bn" type: "BatchNorm" bottom: "a" top: "h" }\n'
                            'layer { name: "sc" type: "Scale" bottom: "h" top: "h" }\n'
                            'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" loss_weight: 1 }', "h"),
}


@pytest.mark.parametrize("chain, top", UNFUSABLE.values(), ids=UNFUSABLE.keys())
def test_chains_the_unit_cannot_run_stay_layer_by_layer(chain: str, top: str) -> None:
    text = ('force_backward: true\nlayer { name: "x" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 '
            'dim: 2 dim: 2 } } }\n' + chain)
    net = me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=me.TRAIN, dtype=np.float64)
    assert not net.schedule.units
    net.blobs["a"].data[...] = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    out = net.forward()[top]
    assert np.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_cpu_backward_keeping_the_top_diff_gives_the_same_gradients(batch_stats: bool, slope: float) -> None:
    """keep_top (the fused step's scratch dh): d stays as given, dz is recomputed from it; every gradient is
    bit-identical to the pass that overwrites d with dz (which must then hold gamma * relu'(u) * d)."""
    from memnet_engine.core.cpu import bn_scale_relu as kernels
    rng = np.random.default_rng(3)
    dims = (3, 5, 7)
    x, d = (rng.standard_normal(dims).astype(np.float32) for _ in range(2))
    mean, var = kernels.batch_moments(x, dims)
    std = np.sqrt(var + np.float32(1e-5))
    gamma, beta = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    results = {}
    for keep in (False, True):
        top, diffs = d.copy(), (np.zeros(5, np.float32), np.zeros(5, np.float32))
        dx = kernels.backward(x, None, top, dims, mean, std, gamma, slope, batch_stats=batch_stats,
                              gamma_diff=diffs[0], beta_diff=diffs[1], want_dx=True, top_gets_dz=True, beta=beta,
                              keep_top=keep)
        results[keep] = (top, dx, *diffs)
    kept, overwritten = results[True], results[False]
    np.testing.assert_array_equal(kept[0], d)
    u = (x - mean.reshape(1, -1, 1)) / std.reshape(1, -1, 1) * gamma.reshape(1, -1, 1) + beta.reshape(1, -1, 1)
    expected_dz = d * np.where(u > 0, np.float32(1), np.float32(slope)) * gamma.reshape(1, -1, 1)
    np.testing.assert_allclose(overwritten[0], expected_dz, rtol=1e-6, atol=1e-7)
    for a, b in zip(kept[1:], overwritten[1:]):
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
        np.testing.assert_array_equal(a, b)


def test_cpu_kernels_on_a_channel_slice_equal_them_on_a_contiguous_copy() -> None:
    """A zero-copy Concat's input is a channel slice: the kernels see it through a C-typed view of its
    parent's rows (``_rows``) and must give bit-identical results, touching no channel outside the slice."""
    from memnet_engine.core.cpu import bn_scale_relu as kernels
    rng = np.random.default_rng(5)
    parent = rng.standard_normal((3, 9, 4, 5)).astype(np.float32)
    sliced, copy = parent[:, 2:6], np.ascontiguousarray(parent[:, 2:6])
    dims = (3, 4, 20)
    view = kernels._rows(sliced, dims)
    assert view.flags.c_contiguous and view.shape == (3, 9, 20)
    np.testing.assert_array_equal(view[:, :4], copy.reshape(dims))
    moments = [kernels.batch_moments(x, dims) for x in (sliced, copy)]
    for a, b in zip(*moments):
        np.testing.assert_array_equal(a, b)
    mean, std = moments[0][0], np.sqrt(moments[0][1] + np.float32(1e-5))
    gamma, beta = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    out_parent = np.full_like(parent, 7.0)
    outputs = [kernels.forward(sliced, dims, mean, std, gamma, beta, 0.1, out=out_parent[:, 2:6]),
               kernels.forward(copy, dims, mean, std, gamma, beta, 0.1)]
    np.testing.assert_array_equal(*outputs)
    assert np.all(np.delete(out_parent, range(2, 6), axis=1) == 7.0)
    grads = []
    for x in (sliced, copy):
        diffs = (np.zeros(4, np.float32), np.zeros(4, np.float32))
        dx = kernels.backward(x, None, np.ones(x.shape, np.float32), dims, mean, std, gamma, 0.1, batch_stats=True,
                              gamma_diff=diffs[0], beta_diff=diffs[1], want_dx=True, top_gets_dz=True, beta=beta)
        grads.append((dx, *diffs))
    for a, b in zip(*grads):
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
        np.testing.assert_array_equal(a, b)
