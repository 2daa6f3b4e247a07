"""Reading and writing .caffemodel files: round trip, Caffe's byte layout, and clear errors."""
import os

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.proto import caffe_pb2 as pb
from conftest import GOLDEN_FIXTURES

DEPLOY = str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt")
WEIGHTS = str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel")


def all_params(net):
    return {(name, i): blob.data.copy() for name, blobs in net.params.items() for i, blob in enumerate(blobs)}


def test_save_then_load_gives_identical_blobs(tmp_path):
    net = me.Net(DEPLOY, phase=me.TEST, weights=WEIGHTS)
    path = tmp_path / "copy.caffemodel"
    net.save(str(path))
    other = me.Net(DEPLOY, phase=me.TEST)
    other.copy_from(str(path))
    before, after = all_params(net), all_params(other)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    assert [f for f in os.listdir(tmp_path)] == ["copy.caffemodel"]  # no temp file left behind


def test_saved_file_has_caffes_layout(tmp_path):
    net = me.Net(DEPLOY, phase=me.TEST, weights=WEIGHTS)
    net.save(str(tmp_path / "w.caffemodel"))
    ours = pb.NetParameter.FromString((tmp_path / "w.caffemodel").read_bytes())
    caffe = pb.NetParameter.FromString(open(WEIGHTS, "rb").read())
    ours_layers = {layer.name: layer for layer in ours.layer}
    for layer in caffe.layer:
        if not layer.blobs:
            continue
        mine = ours_layers[layer.name]
        assert mine.type == layer.type
        for a, b in zip(mine.blobs, layer.blobs):
            assert list(a.shape.dim) == list(b.shape.dim)
            assert a.SerializeToString() == b.SerializeToString()  # packed floats, same field numbers


def test_truncated_caffemodel_is_one_clear_error(tmp_path):
    data = open(WEIGHTS, "rb").read()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2 + 3])
    net = me.Net(DEPLOY, phase=me.TEST)
    with pytest.raises(me.WeightsError, match=r"cut\.caffemodel: truncated or corrupt \.caffemodel"):
        net.copy_from(str(path))


def test_shape_mismatch_names_layer_and_leaves_weights_untouched(tmp_path):
    net = me.Net(DEPLOY, phase=me.TEST, weights=WEIGHTS)
    before = all_params(net)
    model = pb.NetParameter.FromString(open(WEIGHTS, "rb").read())
    conv = next(layer for layer in model.layer if layer.name == "conv_transition_02")
    conv.blobs[0].shape.dim[1] += 1
    conv.blobs[0].data.extend([0.0] * 8)
    (tmp_path / "bad.caffemodel").write_bytes(model.SerializeToString())
    with pytest.raises(me.WeightsError, match="layer 'conv_transition_02': shape mismatch"):
        net.copy_from(str(tmp_path / "bad.caffemodel"))
    for key, value in all_params(net).items():
        np.testing.assert_array_equal(value, before[key])


def test_legacy_4d_blob_shapes_are_accepted(tmp_path):
    model = pb.NetParameter()
    layer = model.layer.add(name="conv1", type="Convolution")
    weights = np.arange(8 * 1 * 3 * 3, dtype=np.float32)
    layer.blobs.add(num=8, channels=1, height=3, width=3).data.extend(weights.tolist())
    layer.blobs.add(num=1, channels=1, height=1, width=8).data.extend([0.5] * 8)
    (tmp_path / "legacy.caffemodel").write_bytes(model.SerializeToString())
    net = me.Net(DEPLOY, phase=me.TEST)
    net.copy_from(str(tmp_path / "legacy.caffemodel"))
    np.testing.assert_array_equal(net.params["conv1"][0].data, weights.reshape(8, 1, 3, 3))
    np.testing.assert_array_equal(net.params["conv1"][1].data, np.full(8, 0.5))


def test_missing_file_and_non_model_are_clear(tmp_path):
    net = me.Net(DEPLOY, phase=me.TEST)
    with pytest.raises(me.WeightsError, match="cannot read"):
        net.copy_from(str(tmp_path / "absent.caffemodel"))
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(me.WeightsError, match="holds no layers"):
        net.copy_from(str(tmp_path / "empty.caffemodel"))
