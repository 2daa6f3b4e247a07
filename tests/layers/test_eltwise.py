"""Eltwise SUM (with coefficients), PROD (both gradient forms) and MAX (Caffe's tie rule)."""
import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer


def eltwise_text(options: str, n: int = 3) -> str:
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(n))
    return f'name: "e" type: "Eltwise" {bottoms} top: "y" eltwise_param {{ {options} }}'


@pytest.mark.parametrize("options", [
    "operation: SUM", "operation: SUM coeff: 1 coeff: -0.5 coeff: 2", "operation: PROD",
    "operation: PROD stable_prod_grad: false", "operation: MAX"])
def test_gradients(make_layer, options):
    layer, bottoms, tops = make_layer(eltwise_text(options), [(2, 3, 2, 3)] * 3)
    check_layer(layer, bottoms, tops).assert_ok()


def test_sum_with_coefficients(make_layer):
    layer, bottoms, tops = make_layer(eltwise_text("coeff: 1 coeff: -0.5 coeff: 2"), [(2, 2)] * 3)
    layer.forward(bottoms, tops)
    a, b, c = (blob.data for blob in bottoms)
    np.testing.assert_allclose(tops[0].data, a - 0.5 * b + 2 * c)


def test_max_ties_follow_caffe(make_layer):
    layer, bottoms, tops = make_layer(eltwise_text("operation: MAX"), [(4,)] * 3)
    bottoms[0].data = np.array([1.0, 2.0, 0.0, 5.0])
    bottoms[1].data = np.array([1.0, 1.0, 3.0, 5.0])
    bottoms[2].data = np.array([1.0, 2.0, 3.0, 6.0])
    layer.forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, [1.0, 2.0, 3.0, 6.0])
    # ties between the first two go to the second; later bottoms must be strictly greater
    np.testing.assert_array_equal(layer.max_index, [1, 0, 1, 2])
    tops[0].diff = np.array([10.0, 20.0, 30.0, 40.0])
    layer.backward(tops, [True] * 3, bottoms)
    np.testing.assert_array_equal(bottoms[0].diff, [0, 20, 0, 0])
    np.testing.assert_array_equal(bottoms[1].diff, [10, 0, 30, 0])
    np.testing.assert_array_equal(bottoms[2].diff, [0, 0, 0, 40])


def test_coefficients_need_sum_and_one_per_bottom(make_layer):
    with pytest.raises(me.NetError, match="coeff"):
        make_layer(eltwise_text("operation: PROD coeff: 1 coeff: 1 coeff: 1"), [(2,)] * 3)
    with pytest.raises(me.NetError, match="coeff"):
        make_layer(eltwise_text("coeff: 1 coeff: 2"), [(2,)] * 3)


def test_shapes_must_match(make_layer):
    with pytest.raises(me.NetError, match="shapes differ"):
        make_layer(eltwise_text("", 2), [(2, 3), (3, 2)])
