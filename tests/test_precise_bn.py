"""Precise BN: pooled exact statistics over K batches, Caffe's blob layout, a loaded result reproduces them."""
import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from memnet_engine.core.precise_bn import PooledStatistics, precise_bn
from memnet_engine.core.weights import read_caffemodel

# x -> c1 -> bn1 -> relu -> c2 -> bn2 (in place): bn2's input depends on bn1 normalising with batch statistics.
NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 }
                            bias_filler { type: "gaussian" std: 1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "n1" }
layer { name: "r1" type: "ReLU" bottom: "n1" top: "n1" }
layer { name: "c2" type: "Convolution" bottom: "n1" top: "c2"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "c2" top: "c2" }
"""
K = 5


def make_net(phase=me.TRAIN, weights=None) -> me.Net:
    me.set_random_seed(3)
    return me.Net(text_format.Parse(NET, me.caffe_pb2.NetParameter()), phase=phase, dtype=np.float64,
                  weights=weights)


def batches() -> list[dict]:
    rs = np.random.default_rng(0)
    # Each batch has its own offset and spread, so pooled and per-batch statistics differ.
    return [{"x": rs.standard_normal((4, 2, 5, 5)) * (1 + k) + 2 * k} for k in range(K)]


def bn_inputs(net: me.Net) -> dict[str, np.ndarray]:
    """What bn1 and bn2 receive over the K batches in TRAIN mode, stacked along N."""
    seen = {"c1": [], "c2": []}
    for inputs in batches():
        net.forward(end="c2", **inputs)  # c2 still holds the convolution output (bn2 runs in place after it)
        for name in seen:
            seen[name].append(net.blobs[name].data.copy())
    return {name: np.concatenate(values) for name, values in seen.items()}


def exact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased variance of all pooled values."""
    per_channel = values.transpose(1, 0, 2, 3).reshape(values.shape[1], -1)
    return per_channel.mean(axis=1), per_channel.var(axis=1, ddof=1)


@pytest.fixture
def recomputed():
    net = make_net()
    inputs = bn_inputs(net)
    stats = precise_bn(net, batches())
    return net, inputs, stats


def test_statistics_are_the_exact_pooled_mean_and_unbiased_variance(recomputed):
    net, inputs, stats = recomputed
    for layer, blob in (("bn1", "c1"), ("bn2", "c2")):
        mean, var = exact(inputs[blob])
        mean_sum, var_sum, scale = (b.data for b in net.params[layer])
        np.testing.assert_array_equal(scale, [1.0])
        np.testing.assert_allclose(mean_sum, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(var_sum, var, rtol=1e-12)
        assert stats[layer].count == K * 4 * 25
    # The batches discriminate: the average of bn1's per-batch variances (without the spread of the
    # batch means) is far from the pooled variance.
    per_batch = np.mean([exact(part)[1] for part in np.split(inputs["c1"], K)], axis=0)
    assert np.max(net.params["bn1"][1].data / per_batch) > 1.2


def test_result_is_a_caffemodel_that_reproduces_the_statistics(recomputed, tmp_path):
    net, _, _ = recomputed
    path = tmp_path / "precise.caffemodel"
    net.save(path)
    saved = {layer.name: layer.blobs for layer in read_caffemodel(str(path)).layer}
    for layer in ("bn1", "bn2"):
        assert [tuple(b.shape.dim) for b in saved[layer]] == [(3,) if layer == "bn1" else (2,)] * 2 + [(1,)]
        assert list(saved[layer][2].data) == [1.0]
        for proto, blob in zip(saved[layer], net.params[layer]):  # .caffemodel data is float32
            np.testing.assert_array_equal(proto.data, blob.data.astype(np.float32))
    test_net = make_net(me.TEST, weights=str(path))
    test_net.forward(end="bn1", **batches()[0])
    mean, var = (np.array(saved["bn1"][i].data, np.float64).reshape(1, 3, 1, 1) for i in (0, 1))
    expected = (test_net.blobs["c1"].data - mean) / np.sqrt(var + np.float32(1e-5))
    np.testing.assert_allclose(test_net.blobs["n1"].data, expected, rtol=1e-10, atol=1e-12)


def test_data_layer_batches_are_counted(tmp_path):
    rows = np.random.default_rng(1).standard_normal((10, 2, 3, 3)) * np.arange(1, 11).reshape(10, 1, 1, 1)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"], f["label"] = rows.astype(np.float32), rows.astype(np.float32)
    (tmp_path / "list.txt").write_text("a.h5\n")
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" '
        'batch_size: 4 } }\nlayer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }\n')
    net = me.Net(str(tmp_path / "net.prototxt"), phase=me.TRAIN, dtype=np.float64)
    precise_bn(net, 3)  # rows 0-3, 4-7, 8 9 0 1 (the data layer wraps)
    seen = rows[[*range(10), 0, 1]]
    mean, var = exact(seen)
    np.testing.assert_allclose(net.params["bn"][0].data, mean, rtol=1e-6)
    np.testing.assert_allclose(net.params["bn"][1].data, var, rtol=1e-6)


def test_merging_batches_equals_one_pass():
    values = np.random.default_rng(2).standard_normal((3, 100)) * 50 + 1e4  # far from zero: no cancellation
    pooled = PooledStatistics()
    for part in np.split(values, [10, 11, 60], axis=1):
        pooled.add_batch(part.shape[1], part.mean(axis=1), part.var(axis=1, ddof=1) if part.shape[1] > 1 else 0 * part[:, 0])
    np.testing.assert_allclose(pooled.mean, values.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(pooled.variance, values.var(axis=1, ddof=1), rtol=1e-10)


def test_a_test_phase_net_or_no_batches_is_an_error():
    with pytest.raises(me.MemnetError, match="TRAIN-phase"):
        precise_bn(make_net(me.TEST), batches())
    net = make_net()
    before = [b.data.copy() for b in net.params["bn1"]]
    with pytest.raises(me.MemnetError, match="no batches"):
        precise_bn(net, [])
    for blob, old in zip(net.params["bn1"], before):
        np.testing.assert_array_equal(blob.data, old)


def test_standalone_command_rewrites_only_the_statistics(tmp_path):
    from memnet_engine.cli import precise_bn as tool
    from memnet_engine.cli import train
    from conftest import tiny_memnet_training_set

    net_file = tiny_memnet_training_set(tmp_path)
    assert train.main([str(net_file), "--out", str(tmp_path / "run"), "--seed", "1", "--max-iter", "3",
                       "--batch-size", "4", "--no-preview", "--precise-bn", "4"]) == 0
    snapshot = tmp_path / "run" / "MemNet_M2R1_8C4_iter_3.caffemodel"
    from_train = tmp_path / "run" / "MemNet_M2R1_8C4_iter_3_precise_bn.caffemodel"
    out = tmp_path / "out.caffemodel"
    assert tool.main([str(net_file), str(snapshot), "-o", str(out), "--batches", "4", "--batch-size", "4",
                      "--seed", "1"]) == 0
    before, after = (read_caffemodel(str(path)) for path in (snapshot, out))
    recomputed = 0
    for old, new in zip(before.layer, after.layer):
        assert old.name == new.name
        if new.type == "BatchNorm":
            assert list(new.blobs[2].data) == [1.0] and list(old.blobs[2].data) != [1.0]
            assert new.blobs[0].data != old.blobs[0].data
            recomputed += 1
        else:
            assert new.blobs == old.blobs
    assert recomputed == 1 + 2 * 3 + 2  # conv1, 2 blocks of (2 recursion convs + gate), 2 reconstructions
    # tools/train.py --precise-bn did the same to the final weights (another data cursor, so other batches).
    trained = read_caffemodel(str(from_train))
    assert [len(layer.blobs) for layer in trained.layer] == [len(layer.blobs) for layer in after.layer]
    assert all(list(layer.blobs[2].data) == [1.0] for layer in trained.layer if layer.type == "BatchNorm")


def test_standalone_command_refuses_a_deploy_net(tmp_path, capsys):
    from memnet_engine.cli import precise_bn as tool
    from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net

    (tmp_path / "deploy.prototxt").write_text(text_format.MessageToString(memnet_deploy_net(MemNetConfig(2, 1, 4))))
    me.Net(str(tmp_path / "deploy.prototxt")).save(tmp_path / "w.caffemodel")
    assert tool.main([str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel"), "-o",
                      str(tmp_path / "o.caffemodel")]) == 1
    assert "no HDF5Data layer in the TRAIN phase" in capsys.readouterr().err
    assert not (tmp_path / "o.caffemodel").exists()
