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
    # every recursion's two units (Winograd) and each block's gate unit (a pointwise GEMM); not the
    # reconstruction's (its 64 -> 1 convolution runs by the direct sum)
    assert len(fused) == 10 and all(step.layer.applies for step in fused)
    assert sum(step.layer.conv.geometry.is_pointwise for step in fused) == 2
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


def test_no_fusion_for_pycaffe_passes_nor_im2col_3x3(deploy_net) -> None:
    net, _ = deploy_net
    everything = net.schedule.forward_steps(0, len(net.layers) - 1)  # pycaffe's pass keeps every blob
    assert not [step for step in everything if step.layer.type == FUSED]
    net.workspace.fast_convolution = False  # im2col + GEMM: only the pointwise gates still apply their unit
    assert [step.layer.conv.geometry.is_pointwise for step in fused_steps(net)] == [True, True]


def test_planned_training_step_runs_fused_and_equals_the_pycaffe_step_bit_for_bit() -> None:
    """A solver-style step (forward_backward without intermediates) fuses the recursion and gate units into
    their convolutions: no unit output is stored or recomputed, and every loss, parameter gradient and running
    sum equals the step that keeps every blob."""
    nets = [me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"), phase=me.TRAIN,
                   weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel")) for _ in range(2)]
    planned, pycaffe = nets
    fused = fused_steps(planned)
    assert len(fused) == 10 and all(step.need_backward for step in fused)
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
    # only the units that the 1-output reconstructions read are still recomputed
    assert recomputed == ["BatchNorm+Scale+ReLU"] * (len(planned.schedule.units) - len(fused))


@pytest.mark.parametrize("bands", [False, True], ids=["whole_images", "row_bands"])
def test_a_pointwise_convolution_applies_a_unit_prologue_bit_identically(make_layer, monkeypatch, bands) -> None:
    """A 1x1 convolution given a prologue applies the unit to each chunk's columns: output and gradients are
    those of the plain layer fed the unit's output, whole images or bands of rows (strided columns)."""
    from test_convolution import conv_text

    from memnet_engine.core.cpu import bn_scale_relu as kernels
    from memnet_engine.core.layers import convolution
    if bands:
        for budget in ("CPU_COLUMN_BYTES", "CPU_UNIT_COLUMN_BYTES"):  # the same bands with and without the unit
            monkeypatch.setattr(convolution, budget, 3 * 7 * 12 * 4)  # 3 output rows of 12 channels
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 1", 6), [(2, 12, 9, 7)], dtype=np.float32)
    rng = np.random.default_rng(4)
    mean, beta = (rng.standard_normal(12).astype(np.float32) for _ in range(2))
    std, gamma = (rng.uniform(0.5, 2, 12).astype(np.float32) for _ in range(2))
    prologue = (mean, std, gamma, beta, 0.1)
    x = bottoms[0].data.copy()
    h = kernels.forward(x, (2, 12, 63), mean, std, gamma, beta, 0.1)
    dy = rng.standard_normal((2, 6, 9, 7)).astype(np.float32)
    results = []
    for given, options in ((h, {}), (x, {"prologue": prologue})):
        bottoms[0].data = given
        layer.forward_cpu(bottoms, tops, **options)
        for blob in layer.blobs:
            blob.diff = np.zeros(blob.shape, np.float32)
        dh = np.empty(x.shape, np.float32)
        layer.gradients_cpu(given, dy, dh, **options)
        results.append([tops[0].data.copy(), dh] + [blob.diff.copy() for blob in layer.blobs])
    for plain, fused in zip(*results):
        assert np.all(np.isfinite(fused)) and np.abs(fused).max() > 0
        np.testing.assert_array_equal(fused, plain)
    assert layer.accepts_prologue
    layer._scratch.fast_convolution = False  # a pointwise GEMM takes a prologue either way
    assert layer.accepts_prologue
