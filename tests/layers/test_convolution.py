"""Convolution: forward against a direct loop implementation, gradient checks per configuration."""
import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer

CONFIGS = {
    "3x3_pad1": ("kernel_size: 3 pad: 1", (2, 3, 5, 4), 4),
    "stride2": ("kernel_size: 3 stride: 2", (2, 2, 7, 6), 3),
    "dilation2": ("kernel_size: 3 pad: 2 dilation: 2", (1, 2, 6, 6), 2),
    "group2": ("kernel_size: 3 pad: 1 group: 2", (2, 4, 4, 5), 4),
    "stride_group_dilation": ("kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 2", (2, 4, 7, 6), 6),
    "rect_hw_fields": ("kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2", (2, 2, 5, 6), 3),
    "1x1_nobias": ("kernel_size: 1 bias_term: false", (2, 5, 3, 4), 3),
    "1x1_stride2": ("kernel_size: 1 stride: 2", (2, 3, 5, 5), 2),
}


def conv_text(options: str, num_output: int) -> str:
    return (f'name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param {{ num_output: {num_output} '
            f'{options} weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def direct_convolution(x, w, b, stride, pad, dilation, group):
    """Textbook loops over every output element (independent of im2col)."""
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (width + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    og = o // group
    for i in range(n):
        for f in range(o):
            g = f // og
            for r in range(ho):
                for s in range(wo):
                    acc = 0.0 if b is None else b[f]
                    for ch in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                acc += w[f, ch, p, q] * xp[i, g * cg + ch, r * stride[0] + p * dilation[0],
                                                           s * stride[1] + q * dilation[1]]
                    y[i, f, r, s] = acc
    return y


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_direct_loops(make_layer, name):
    options, shape, num_output = CONFIGS[name]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    layer.forward(bottoms, tops)
    g = layer.geometry
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = direct_convolution(bottoms[0].data, layer.blobs[0].data, bias, g.stride, g.pad, g.dilation, layer.group)
    np.testing.assert_allclose(tops[0].data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients(make_layer, name):
    options, shape, num_output = CONFIGS[name]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    check_layer(layer, bottoms, tops).assert_ok()


def test_param_gradients_accumulate(make_layer):
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 2), [(1, 2, 4, 4)])
    layer.forward(bottoms, tops)
    tops[0].diff = np.ones(tops[0].shape)
    layer.backward(tops, [True], bottoms)
    once = layer.blobs[0].diff.copy()
    layer.backward(tops, [True], bottoms)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)
    np.testing.assert_allclose(layer.blobs[1].diff, [32.0, 32.0])


@pytest.mark.parametrize("options, message", [
    ("kernel_size: 3 group: 3", "group 3 must divide"),
    ("pad: 1", "kernel_size"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("kernel_size: 9", "smaller than the kernel"),
])
def test_bad_options_name_the_layer(make_layer, options, message):
    with pytest.raises(me.NetError, match=message) as info:
        make_layer(conv_text(options, 2), [(1, 4, 5, 5)])
    assert "conv" in str(info.value)


def test_fillers_follow_caffe_scales(make_layer):
    me.set_random_seed(3)
    text = ('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 64 kernel_size: 3 '
            'weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.25 } }')
    layer, _, _ = make_layer(text, [(1, 32, 5, 5)])
    weights = layer.blobs[0].data
    assert weights.shape == (64, 32, 3, 3)
    assert abs(weights.std() - np.sqrt(2.0 / (32 * 9))) < 0.01
    np.testing.assert_array_equal(layer.blobs[1].data, np.full(64, 0.25))
