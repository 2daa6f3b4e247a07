"""The gradient checker itself must catch a wrong backward."""
import numpy as np
import pytest

from memnet_engine.core.gradcheck import check_layer

RELU = 'name: "r" type: "ReLU" bottom: "x" top: "y"'


def test_correct_layer_passes(make_layer):
    layer, bottoms, tops = make_layer(RELU, [(2, 3)])
    report = check_layer(layer, bottoms, tops, kink_range=1e-2)
    report.assert_ok()
    assert report.checked > 0


def test_wrong_backward_is_caught(make_layer):
    layer, bottoms, tops = make_layer(RELU, [(2, 3)])
    correct = layer.backward_cpu

    def off_by_ten_percent(tops_, propagate_down, bottoms_):
        correct(tops_, propagate_down, bottoms_)
        bottoms_[0].diff = bottoms_[0].diff * 1.1

    layer.backward_cpu = off_by_ten_percent
    bottoms[0].data = np.abs(bottoms[0].data) + 1.0  # every element has gradient 1
    with pytest.raises(AssertionError, match="6 of 6 gradient elements differ"):
        check_layer(layer, bottoms, tops).assert_ok()


CONV = ('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 '
        'pad: 1 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }')


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_weight_gradient_fails(make_layer, bad):
    """One NaN (or inf) element of Convolution's weight gradient is a failure, never 'within threshold'."""
    layer, bottoms, tops = make_layer(CONV, [(1, 2, 4, 4)])
    check_layer(layer, bottoms, tops).assert_ok()
    correct = layer.backward_cpu

    def poisoned(tops_, propagate_down, bottoms_):
        correct(tops_, propagate_down, bottoms_)
        layer.blobs[0].diff.reshape(-1)[5] = bad

    layer.backward_cpu = poisoned
    report = check_layer(layer, bottoms, tops)
    assert report.worst == np.inf
    assert len(report.failures) == 1 and report.failures[0].startswith("param0[0, 0, 1, 2]: analytic")
    with pytest.raises(AssertionError, match="1 of 70 gradient elements differ"):
        report.assert_ok()


def test_a_nan_objective_fails_every_element(make_layer):
    """A forward that turns NaN makes the numeric gradient NaN: every checked element fails."""
    layer, bottoms, tops = make_layer(RELU, [(2, 3)])
    correct = layer.forward_cpu

    def nan_forward(bottoms_, tops_):
        correct(bottoms_, tops_)
        tops_[0].data = tops_[0].data * np.nan

    layer.forward_cpu = nan_forward
    bottoms[0].data = np.abs(bottoms[0].data) + 1.0
    report = check_layer(layer, bottoms, tops)
    assert report.checked == 6 and len(report.failures) == 6 and report.worst == np.inf
