"""EuclideanLoss: value sum((a-b)^2)/(2N), gradients to both inputs."""
import numpy as np

from memnet_engine.core.gradcheck import check_layer

LOSS = 'name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" {extra}'


def test_value_and_default_weight(make_layer):
    layer, bottoms, tops = make_layer(LOSS.format(extra=""), [(3, 2, 2, 2)] * 2)
    loss = layer.forward(bottoms, tops)
    a, b = bottoms[0].data, bottoms[1].data
    assert tops[0].shape == ()
    np.testing.assert_allclose(tops[0].data, ((a - b) ** 2).sum() / 6)
    assert loss == float(tops[0].data)
    assert tops[0].diff == 1.0


def test_loss_weight_scales_loss_and_seeds_diff(make_layer):
    layer, bottoms, tops = make_layer(LOSS.format(extra="loss_weight: 0.5"), [(3, 4)] * 2)
    loss = layer.forward(bottoms, tops)
    assert tops[0].diff == 0.5
    np.testing.assert_allclose(loss, 0.5 * float(tops[0].data))
    layer.backward(tops, [True, True], bottoms)
    np.testing.assert_allclose(bottoms[0].diff, 0.5 * (bottoms[0].data - bottoms[1].data) / 3)
    np.testing.assert_allclose(bottoms[1].diff, -bottoms[0].diff)


def test_gradients(make_layer):
    layer, bottoms, tops = make_layer(LOSS.format(extra=""), [(3, 2, 2, 2)] * 2)
    check_layer(layer, bottoms, tops).assert_ok()
