"""BatchNorm: Caffe's running-sum statistics, phase defaults, and gradients in both modes."""
import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer

BN = 'name: "bn" type: "BatchNorm" bottom: "x" top: "{top}" {options}'


def test_train_forward_normalises_with_batch_statistics(make_layer):
    layer, bottoms, tops = make_layer(BN.format(top="y", options=""), [(4, 3, 2, 5)])
    layer.forward(bottoms, tops)
    x = bottoms[0].data
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(tops[0].data, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10)


def test_running_sums_follow_caffe(make_layer):
    layer, bottoms, tops = make_layer(BN.format(top="y", options="batch_norm_param { moving_average_fraction: 0.9 }"),
                                      [(4, 3, 2, 5)])
    x1 = bottoms[0].data.copy()
    layer.forward(bottoms, tops)
    m = x1.size // 3
    mean1, var1 = x1.mean(axis=(0, 2, 3)), x1.var(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].data, mean1)
    np.testing.assert_allclose(layer.blobs[1].data, var1 * m / (m - 1))
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    x2 = x1 * 2 + 1
    bottoms[0].data = x2
    layer.forward(bottoms, tops)
    mean2, var2 = x2.mean(axis=(0, 2, 3)), x2.var(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].data, mean2 + 0.9 * mean1)
    np.testing.assert_allclose(layer.blobs[1].data, (var2 + 0.9 * var1) * m / (m - 1))
    np.testing.assert_allclose(layer.blobs[2].data, [1.9])


def test_global_stats_divide_by_scale_factor(make_layer):
    layer, bottoms, tops = make_layer(BN.format(top="y", options="batch_norm_param { eps: 0.001 }"), [(2, 2, 3, 3)],
                                      phase=me.TEST)
    assert layer.use_global_stats
    layer.blobs[0].data = np.array([2.0, -4.0])
    layer.blobs[1].data = np.array([8.0, 0.5])
    layer.blobs[2].data = np.array([2.0])
    layer.forward(bottoms, tops)
    mean = np.array([1.0, -2.0]).reshape(1, 2, 1, 1)
    var = np.array([4.0, 0.25]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(tops[0].data, (bottoms[0].data - mean) / np.sqrt(var + 0.001))


def test_use_global_stats_overrides_phase(make_layer):
    layer, _, _ = make_layer(BN.format(top="y", options="batch_norm_param { use_global_stats: true }"), [(2, 2, 2, 2)])
    assert layer.use_global_stats
    layer, _, _ = make_layer(BN.format(top="y", options="batch_norm_param { use_global_stats: false }"),
                             [(2, 2, 2, 2)], phase=me.TEST)
    assert not layer.use_global_stats


def test_statistics_are_never_learned(make_layer):
    layer, _, _ = make_layer(BN.format(top="y", options=""), [(2, 2, 2, 2)])
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0]
    with pytest.raises(me.NetError, match="layer .*: BatchNorm statistics cannot be learned: set lr_mult"):
        make_layer(BN.format(top="y", options="param { lr_mult: 1 }"), [(2, 2, 2, 2)])


@pytest.mark.parametrize("top", ["y", "x"], ids=["separate", "in_place"])
@pytest.mark.parametrize("phase", [me.TRAIN, me.TEST], ids=["train", "test"])
def test_gradients(make_layer, top, phase):
    layer, bottoms, tops = make_layer(BN.format(top=top, options=""), [(3, 2, 3, 2)], phase=phase)
    if phase == me.TEST:
        layer.blobs[0].data = np.array([0.3, -0.2])
        layer.blobs[1].data = np.array([1.5, 0.7])
        layer.blobs[2].data = np.array([1.0])
    check_layer(layer, bottoms, tops, check_params=False).assert_ok()
