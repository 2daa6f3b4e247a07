"""ReLU and leaky ReLU, separate and in place."""
import numpy as np
import pytest

from memnet_engine.core.gradcheck import check_layer


@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("top", ["y", "x"], ids=["separate", "in_place"])
def test_forward_and_gradients(make_layer, slope, top):
    text = f'name: "r" type: "ReLU" bottom: "x" top: "{top}" relu_param {{ negative_slope: {slope} }}'
    layer, bottoms, tops = make_layer(text, [(2, 3, 4, 4)])
    x = bottoms[0].data.copy()
    layer.forward(bottoms, tops)
    np.testing.assert_allclose(tops[0].data, np.where(x > 0, x, slope * x))
    bottoms[0].data = x
    check_layer(layer, bottoms, tops, kink_range=1e-2).assert_ok()
