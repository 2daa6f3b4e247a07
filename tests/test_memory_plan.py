"""The planned path (keep_intermediates=False, solver steps): same numbers as pycaffe's path, blobs freed
by plan, zero-copy concat, and a clear error for reading what was freed."""
from __future__ import annotations

import numpy as np
import pytest

import memnet_engine as me
from conftest import GOLDEN_FIXTURES
from fused_unit_cases import concat_nets_with_top_diffs, training_plan
from memnet_engine.core.memory_plan import make_plan, run_backward, run_forward

TRAIN_NET = GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"
DEPLOY_NET = GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"
INIT = GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel"
SNAPSHOT = GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"


def deploy_net() -> me.Net:
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT)
    net.blobs["data"].data[...] = np.random.default_rng(0).random(net.blobs["data"].shape)
    return net


def m4r4_deploy_net(size: int = 48) -> me.Net:
    """MemNet M4R4 C8 deploy net with filled weights, BatchNorm statistics mean 0 / variance 1, a random image."""
    from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net
    net = me.Net(memnet_deploy_net(MemNetConfig(4, 4, 8), input_shape=(1, 1, size, size)), phase=me.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(1).random(net.blobs["data"].shape)
    for layer in net.layers:
        if layer.type == "BatchNorm":  # running sums
            for blob, value in zip(layer.blobs, (0, 1, 1)):
                blob.data[...] = value
    return net


def test_forward_keeps_the_blobs_asked_for_and_refuses_freed_ones() -> None:
    """#12 item 9: a freed blob used to read as zeros; now what was asked for is kept, the rest raises."""
    net = deploy_net()
    net.forward()
    full = {name: blob.data.copy() for name, blob in net.blobs.items()}
    out = net.forward(blobs=["conv_transition_01"], keep_intermediates=False)
    np.testing.assert_array_equal(out["conv_transition_01"], full["conv_transition_01"])
    assert np.abs(out["conv_transition_01"]).max() > 0
    np.testing.assert_array_equal(out["HR_recovery"], full["HR_recovery"])
    with pytest.raises(me.ReleasedBlobError, match="blob 'conv1'"):
        net.blobs["conv1"].data
    with pytest.raises(me.ReleasedBlobError, match="blob 'concat01'.*net.forward\\(blobs="):
        net.blobs["concat01"].data
    net.forward()  # pycaffe's path brings every blob back
    np.testing.assert_array_equal(net.blobs["conv1"].data, full["conv1"])


def test_planned_training_pass_equals_pycaffe_pass_exactly(monkeypatch) -> None:
    monkeypatch.chdir(GOLDEN_FIXTURES)
    planned, pycaffe = (me.Net(TRAIN_NET, phase=me.TRAIN, weights=INIT) for _ in range(2))
    for step in range(2):  # the second pass starts from what the first one freed
        for net in (planned, pycaffe):
            net.clear_param_diffs()
        assert planned.forward_backward(keep_intermediates=False) == pycaffe.forward_backward()
        for name, params in pycaffe.params.items():
            for i, p in enumerate(params):
                np.testing.assert_array_equal(planned.params[name][i].data, p.data, err_msg=f"{name}/{i}")
                np.testing.assert_array_equal(planned.params[name][i].diff, p.diff, err_msg=f"{name}/{i}")
    readable = {name for name, blob in planned.blobs.items() if not blob.data_released}
    assert readable == set(planned.outputs)  # HDF5 tops are not net inputs: freed too
    assert all(blob.diff_released for name, blob in planned.blobs.items() if name not in readable)


def test_plan_of_a_training_step_frees_recomputes_and_places() -> None:
    net = me.Net(TRAIN_NET, phase=me.TRAIN, weights=INIT)
    steps = net.schedule.forward_steps(0, len(net.layers) - 1)
    plan = make_plan(steps, net, frozenset(net._kept()), backward=True)
    units = [s for s, step in enumerate(steps) if step.layer.type == "BatchNorm+Scale+ReLU"]
    assert len(units) == 13
    recomputed = sorted(sum(plan.recompute_before_backward, []))
    assert recomputed == units  # every unit output is recomputed for its convolution's backward
    freed_in_forward = set(sum(plan.free_after_forward, []))
    assert {steps[u].tops[0] for u in units} <= freed_in_forward
    assert {steps[u].bottoms[0] for u in units}.isdisjoint(freed_in_forward)  # their backward reads them
    # zero-copy concat (CPU: strided slices are fine): every Eltwise output lands in its Concat's output
    placed = {(steps[p.concat].layer.name, steps[p.producer].layer.name) for p in plan.placements}
    assert placed == {("concat01", "eltwise01_01"), ("concat01", "eltwise01_02"),
                      ("concat02", "eltwise02_01"), ("concat02", "eltwise02_02")}


@pytest.mark.parametrize("batch", [1, 2])
def test_zero_copy_concat_writes_an_input_a_backward_needs_into_the_concat(batch: int) -> None:
    net, reference = concat_nets_with_top_diffs(batch)
    steps, plan = training_plan(net)
    assert [(steps[p.concat].layer.name, steps[p.producer].layer.name) for p in plan.placements] == [("cat", "e")]
    run_forward(net, steps, plan)
    unit_input = net.blobs[next(step.bottoms[0] for step in steps if step.layer.type == "BatchNorm+Scale+ReLU")]
    assert np.shares_memory(net.blobs["cat"].data, unit_input.data)  # one array, kept for both backwards
    run_backward(net, steps, plan)
    reference.forward_backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, reference.blobs["x"].diff)
    for name, params in reference.params.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(net.params[name][i].diff, p.diff, err_msg=f"{name}/{i}")
    inference = make_plan(steps, net, frozenset(net._kept()), backward=False)
    assert not inference.placements  # there e dies at the Concat: copied, not placed


def test_fused_units_in_pycaffe_forward_backward_range_rules() -> None:
    net = deploy_net()
    unit = next(iter(net.schedule.units.values()))
    net.forward(end=net.layers[unit.first + 1].name)  # ends inside the unit: runs its layers one by one
    assert unit.first not in net.schedule.ran_fused
    net.forward()
    with pytest.raises(me.NetError, match="fused unit"):
        net.backward(start=net.layers[unit.first + 1].name)


def test_inference_plan_lets_units_overwrite_inputs_nothing_else_reads() -> None:
    net = deploy_net()
    steps = net.schedule.forward_steps(0, len(net.layers) - 1)
    plan = make_plan(steps, net, frozenset(net._kept()), backward=False)
    inputs = {steps[s].bottoms[0] for s in plan.overwrite_input}
    assert {"conv01_01_a", "concat01", "concat02"} <= inputs  # read by one unit each: overwritten in place
    assert not inputs & {"data", "conv1"} and not any("split" in name for name in inputs)  # kept or shared
    assert {steps[s].layer.type for s in plan.overwrite_input} == {"BatchNorm+Scale+ReLU", "Scale"}
    train = me.Net(TRAIN_NET, phase=me.TRAIN)
    train_steps = train.schedule.forward_steps(0, len(train.layers) - 1)
    training = make_plan(train_steps, train, frozenset(train._kept()), backward=True)
    assert not training.overwrite_input  # each of those inputs is read again by a backward


def test_a_planned_backward_hands_concat_bottoms_views_of_the_dead_top_diff(monkeypatch) -> None:
    """The plan frees the Concat's top diff after its backward: the bottom diffs are its slices, not copies
    (pycaffe's backward, which keeps every diff, still copies), and the gradients are bit-identical."""
    from memnet_engine.core.layers.concat import ConcatLayer
    shared = []
    backward = ConcatLayer.backward_cpu

    def recording(self, tops, propagate_down, bottoms):
        backward(self, tops, propagate_down, bottoms)
        shared.append((self.top_diff_donated, any(np.shares_memory(b.diff, tops[0].diff) for b in bottoms)))

    monkeypatch.setattr(ConcatLayer, "backward_cpu", recording)
    net, reference = concat_nets_with_top_diffs(2)
    steps, plan = training_plan(net)
    run_forward(net, steps, plan)
    run_backward(net, steps, plan)
    reference.forward_backward()
    assert shared == [(True, True), (False, False)]
    np.testing.assert_array_equal(net.blobs["x"].diff, reference.blobs["x"].diff)
    for name, params in reference.params.items():
        for i, p in enumerate(params):
            assert np.all(np.isfinite(p.diff))
            np.testing.assert_array_equal(net.params[name][i].diff, p.diff, err_msg=f"{name}/{i}")


def test_inference_places_recursion_outputs_in_the_gate_concat_when_that_lowers_the_peak() -> None:
    """MemNet's recursion outputs die at their block's Concat: in an inference pass of M4R4 they are placed
    there (the estimated peak drops), the output is bit-identical to the copying pass and the traced peak is
    lower.  In M2R2 placing saves nothing: they are copied, as before."""
    import tracemalloc

    from memnet_engine.core import memory_plan

    small = deploy_net()
    small_steps = small.schedule.forward_steps(0, len(small.layers) - 1)
    assert not make_plan(small_steps, small, frozenset(small._kept()), backward=False).placements
    net = m4r4_deploy_net()
    results, peaks = [], []
    for place in (True, False):
        kept = frozenset(net._kept())
        steps = net.schedule.forward_steps(0, len(net.layers) - 1, kept)
        plan = make_plan(steps, net, kept, backward=False)
        assert {steps[p.concat].layer.name for p in plan.placements} == {f"concat0{m}" for m in range(1, 5)}
        assert sum(steps[p.producer].layer.type == "Eltwise" for p in plan.placements) == 16  # 4 blocks x 4
        if not place:
            plan.placements = []
            plan.overwrite_input = memory_plan._dying_inputs(memory_plan._Uses(steps, kept, False), [])
        run_forward(net, steps, plan)  # compile and warm the caches first
        tracemalloc.start()
        run_forward(net, steps, plan)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        results.append(net.blobs[net.outputs[0]].data.copy())
    assert np.all(np.isfinite(results[0])) and np.abs(results[0]).max() > 0
    np.testing.assert_array_equal(results[0], results[1])
    assert peaks[0] < 0.95 * peaks[1], peaks


def test_a_planned_pass_after_an_input_is_reshaped_sizes_every_blob_anew() -> None:
    """Reshaping an input blob without net.reshape() (pycaffe asks for it) then running a planned pass: the
    net reshapes first, so a zero-copy Concat's early output has the new size; same output as pycaffe's pass."""
    net = m4r4_deploy_net(48)
    net.forward(keep_intermediates=False)
    for size in (40, 37):
        net.blobs["data"].reshape((1, 1, size, size))
        net.blobs["data"].data[...] = np.random.default_rng(size).random((1, 1, size, size))
        planned = net.forward(keep_intermediates=False)["HR_recovery"].copy()
        assert planned.shape == (1, 1, size, size) and np.all(np.isfinite(planned)) and np.abs(planned).max() > 0
        np.testing.assert_array_equal(planned, net.forward()["HR_recovery"])
