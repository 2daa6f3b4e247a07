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
