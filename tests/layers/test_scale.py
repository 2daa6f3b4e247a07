"""Scale: broadcasting over axis/num_axes, scalar and two-bottom forms, bias, gradients."""
import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer

FILLERS = 'filler { type: "gaussian" } bias_filler { type: "gaussian" }'


def scale_text(options: str, top: str = "y", bottoms=("x",)) -> str:
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'name: "sc" type: "Scale" {bottom} top: "{top}" scale_param {{ {options} }}'


@pytest.mark.parametrize("options, shape, param_shape", [
    ("", (2, 3, 4, 2), (3,)),
    ("num_axes: 0", (2, 3, 4, 2), ()),
    ("axis: 0 num_axes: 2", (2, 3, 4, 2), (2, 3)),
    ("axis: -2 num_axes: -1", (2, 3, 4, 2), (4, 2)),
])
def test_parameter_shape_and_forward(make_layer, options, shape, param_shape):
    layer, bottoms, tops = make_layer(scale_text(f"{options} bias_term: true {FILLERS}"), [shape])
    s, b = layer.blobs[0].data, layer.blobs[1].data
    assert s.shape == param_shape and b.shape == param_shape
    layer.forward(bottoms, tops)
    axis = {"": 1, "num_axes: 0": 0}.get(options, 0 if "axis: 0" in options else 2)
    bshape = (1,) * axis + param_shape + (1,) * (len(shape) - axis - len(param_shape))
    expected = bottoms[0].data * s.reshape(bshape) + b.reshape(bshape)
    np.testing.assert_allclose(tops[0].data, expected)


def test_default_fillers_are_one_and_zero(make_layer):
    layer, _, _ = make_layer(scale_text("bias_term: true"), [(1, 4, 2, 2)])
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(4))
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros(4))


@pytest.mark.parametrize("options, top", [
    (f"bias_term: true {FILLERS}", "y"),
    (f"bias_term: true {FILLERS}", "x"),
    (f"num_axes: 0 {FILLERS}", "y"),
    (f"axis: 0 num_axes: 2 bias_term: true {FILLERS}", "x"),
])
def test_gradients(make_layer, options, top):
    layer, bottoms, tops = make_layer(scale_text(options, top), [(2, 3, 3, 2)])
    check_layer(layer, bottoms, tops).assert_ok()


def test_two_bottom_form_gradients(make_layer):
    layer, bottoms, tops = make_layer(scale_text("axis: 1", bottoms=("x", "s")), [(2, 3, 2, 2), (3, 2)])
    assert layer.blobs == []
    check_layer(layer, bottoms, tops).assert_ok()


def test_shape_mismatch_is_reported(make_layer):
    with pytest.raises(me.NetError, match="scale shape"):
        make_layer(scale_text("axis: 1", bottoms=("x", "s")), [(2, 3, 2, 2), (4,)])
