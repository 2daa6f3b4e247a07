"""Concat along channels, height and the legacy concat_dim field."""
import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer


def concat_text(options: str, n: int) -> str:
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(n))
    return f'name: "cat" type: "Concat" {bottoms} top: "y" concat_param {{ {options} }}'


@pytest.mark.parametrize("options, shapes, axis", [
    ("", [(2, 1, 3, 2), (2, 3, 3, 2), (2, 2, 3, 2)], 1),
    ("axis: 2", [(2, 3, 1, 2), (2, 3, 4, 2)], 2),
    ("axis: -1", [(2, 3, 2, 1), (2, 3, 2, 3)], 3),
    ("concat_dim: 0", [(1, 2, 2), (3, 2, 2)], 0),
])
def test_forward_and_gradients(make_layer, options, shapes, axis):
    layer, bottoms, tops = make_layer(concat_text(options, len(shapes)), shapes)
    layer.forward(bottoms, tops)
    np.testing.assert_array_equal(tops[0].data, np.concatenate([b.data for b in bottoms], axis=axis))
    check_layer(layer, bottoms, tops).assert_ok()


def test_mismatched_shapes_name_the_layer(make_layer):
    with pytest.raises(me.NetError, match="cat"):
        make_layer(concat_text("", 2), [(2, 1, 3, 2), (2, 1, 4, 2)])
