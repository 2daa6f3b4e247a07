"""A fused BatchNorm unit and the 3x3 convolution that alone reads it, run as one step in planned passes
(layers/unit_convolution.py): bit-identical inference and training steps, the unit's output never made nor
recomputed, and only where it applies."""
import numpy as np
import pytest
from conftest import GOLDEN_FIXTURES

import memnet_engine as me

FUSED = "BatchNorm+Scale+ReLU+Convolution"


@pytest.fixture
def deploy_net() -> tuple[me.Net, np.ndarray]:
    """The golden M2R2 C8 deploy net (8 channels: its 3x3 convolutions run by Winograd) and its input."""
    net = me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"), phase=me.TEST,
                 weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))
    return net, np.load(GOLDEN_FIXTURES / "memnet_m2r2_c8.npz")["deploy/input"]


def fused_steps(net: me.Net, keep=()) -> list:
    steps = net.schedule.forward_steps(0, len(net.layers) - 1, frozenset(net._kept(keep)))
    return [step for step in steps if step.layer.type == FUSED]


def test_planned_inference_fuses_units_into_their_convolutions_bit_identically(deploy_net) -> None:
    net, image = deploy_net
    reference = {name: data.copy() for name, data in net.forward(data=image).items()}
    fused = fused_steps(net)
    # every recursion's two units; not the gate's (a 1x1 convolution reads it) nor the reconstruction's (1 output)
    assert len(fused) == 8 and all(step.layer.applies for step in fused)
    outputs = net.forward(data=image, keep_intermediates=False)
    for name, data in reference.items():
        assert np.all(np.isfinite(outputs[name]))
        np.testing.assert_array_equal(outputs[name], data, err_msg=name)
    for step in fused:
        (unit_output,) = step.layer.unit.param.top
        with pytest.raises(me.ReleasedBlobError):
            net.blobs[unit_output].data


def test_a_kept_unit_output_is_not_fused(deploy_net) -> None:
    net, image = deploy_net
    first = fused_steps(net)[0]
    (unit_output,) = first.layer.unit.param.top
    assert all(step.first != first.first for step in fused_steps(net, keep=[unit_output]))
    outputs = net.forward(blobs=[unit_output], data=image, keep_intermediates=False)
    assert np.abs(outputs[unit_output]).max() > 0


def test_no_fusion_for_pycaffe_passes_or_im2col(deploy_net) -> None:
    net, _ = deploy_net
    everything = net.schedule.forward_steps(0, len(net.layers) - 1)  # pycaffe's pass keeps every blob
    assert not [step for step in everything if step.layer.type == FUSED]
    net.workspace.fast_convolution = False
    assert not fused_steps(net)


def test_planned_training_step_runs_fused_and_equals_the_pycaffe_step_bit_for_bit() -> None:
    """A solver-style step (forward_backward without intermediates) fuses the recursion units into their
    convolutions: no unit output is stored or recomputed, and every loss, parameter gradient and running sum
    equals the step that keeps every blob."""
    nets = [me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"), phase=me.TRAIN,
                   weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel")) for _ in range(2)]
    planned, pycaffe = nets
    fused = fused_steps(planned)
    assert len(fused) == 8 and all(step.need_backward for step in fused)
    losses = []
    for net, keep in ((planned, False), (pycaffe, True)):
        net.clear_param_diffs()
        losses.append(float(net.forward_backward(keep_intermediates=keep)))
    assert np.isfinite(losses[0]) and losses[0] == losses[1]
    for name, params in pycaffe.params.items():
        for i, p in enumerate(params):
            ours = planned.params[name][i]
            assert np.all(np.isfinite(ours.diff)), f"{name}/{i}"
            np.testing.assert_array_equal(ours.diff, p.diff, err_msg=f"{name}/{i} diff")
            np.testing.assert_array_equal(ours.data, p.data, err_msg=f"{name}/{i} data")  # BatchNorm sums
    assert any(np.abs(p.diff).max() > 0 for params in planned.params.values() for p in params)
    steps = planned.schedule.forward_steps(0, len(planned.layers) - 1, frozenset(planned._kept()))
    plan = planned.schedule.plan(planned, steps, planned._kept(), backward=True)
    recomputed = [steps[s].layer.type for s in sum(plan.recompute_before_backward, [])]
    # only the units that a 1x1 gate or the 1-output reconstruction reads are still recomputed
    assert recomputed == ["BatchNorm+Scale+ReLU"] * (len(planned.schedule.units) - len(fused))
