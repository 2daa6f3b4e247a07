"""Reading and writing .caffemodel files: round trip, Caffe's byte layout, and clear errors."""
import os
import re
import warnings

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core import memory
from memnet_engine.core.errors import NonFiniteWeights
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.core.weights import array_to_blob_proto, copy_weights_from_file
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


def other_net_model(path):
    """A caffemodel of a net sharing no layer name with the golden deploy net."""
    model = pb.NetParameter(name="other_net")
    array_to_blob_proto(np.ones((4, 3), np.float32), model.layer.add(name="fc9", type="InnerProduct").blobs.add())
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_weights_of_another_net_are_an_error_naming_both_nets(tmp_path):
    path = other_net_model(tmp_path / "other.caffemodel")
    message = r"other.caffemodel \(net 'other_net', 1 layers with weights\) has no layer of net 'memnet_m2r2_c8'"
    with pytest.raises(me.WeightsError, match=message):
        me.Net(DEPLOY, phase=me.TEST, weights=path)
    net = me.Net(DEPLOY, phase=me.TEST)
    with pytest.raises(me.WeightsError, match=message):
        net.copy_from(path)


def test_a_partial_match_is_reported_and_can_be_required_complete(tmp_path, caplog):
    model = pb.NetParameter.FromString(open(WEIGHTS, "rb").read())
    kept = [layer.name for layer in model.layer if layer.blobs][:2]
    for i in reversed(range(len(model.layer))):
        if model.layer[i].blobs and model.layer[i].name not in kept:
            del model.layer[i]
    (tmp_path / "part.caffemodel").write_bytes(model.SerializeToString())
    net = me.Net(DEPLOY, phase=me.TEST)
    with caplog.at_level("INFO", logger="memnet_engine"):
        copied = copy_weights_from_file(net, str(tmp_path / "part.caffemodel"))
    assert copied == kept
    missing = [name for name in net.params if name not in kept]
    assert re.search(rf"Copied \d+ blobs of 2 layers from \S+part.caffemodel; {len(missing)} layers of net "
                     rf"'memnet_m2r2_c8' are not in it and keep their initial values: {missing[0]}, ", caplog.text)
    with pytest.raises(me.WeightsError, match=rf"has no weights for {len(missing)} layer\(s\) of net 'memnet_m2r2_c8'"):
        copy_weights_from_file(net, str(tmp_path / "part.caffemodel"), require_all=True)


def test_nan_weights_warn_naming_the_layer_and_are_an_error_when_strict(tmp_path):
    model = pb.NetParameter.FromString(open(WEIGHTS, "rb").read())
    conv = next(layer for layer in model.layer if layer.name == "conv_transition_02")
    conv.blobs[1].data[0] = float("nan")
    (tmp_path / "nan.caffemodel").write_bytes(model.SerializeToString())
    with pytest.warns(NonFiniteWeights, match=r"nan.caffemodel: NaN or infinite weights in layer\(s\) "
                                              r"conv_transition_02$"):
        me.Net(DEPLOY, phase=me.TEST, weights=str(tmp_path / "nan.caffemodel"))
    net = me.Net(DEPLOY, phase=me.TEST)
    before = all_params(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWeights)
        with pytest.raises(me.WeightsError, match="NaN or infinite weights in layer"):
            net.copy_from(str(tmp_path / "nan.caffemodel"))
    for key, value in all_params(net).items():  # nothing was copied
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_not_read_as_weights():
    with pytest.raises(me.WeightsError, match="/dev/zero: not a regular file"):
        me.Net(DEPLOY, phase=me.TEST).copy_from("/dev/zero")


def test_sizes_are_checked_before_reading(tmp_path, monkeypatch):
    net = me.Net(DEPLOY, phase=me.TEST)
    monkeypatch.setattr(memory, "memory_limit", lambda device="cpu": (1000, "memory of this machine (RAM + swap)"))
    with pytest.raises(me.WeightsError, match=r"reading \S+iter_4.caffemodel \(.*\) needs .* bytes\), more than the "
                                              r"1000 bytes of memory of this machine"):
        net.copy_from(WEIGHTS)


def test_a_blob_shape_overflowing_int64_is_a_clear_error(tmp_path):
    model = pb.NetParameter.FromString(open(WEIGHTS, "rb").read())
    conv = next(layer for layer in model.layer if layer.name == "conv_transition_02")
    del conv.blobs[0].shape.dim[:]
    conv.blobs[0].shape.dim.extend([2**32, 2**32, 1, 1])  # wraps to 0 in int64 arithmetic
    del conv.blobs[0].data[:]
    (tmp_path / "huge.caffemodel").write_bytes(model.SerializeToString())
    arrays = pytest.importorskip("memnet_engine.core.convert")
    with pytest.raises(me.WeightsError, match=r"blob of shape \(4294967296, 4294967296, 1, 1\) holds 0 data values"):
        arrays.read_arrays(str(tmp_path / "huge.caffemodel"))


def test_a_file_name_with_a_nul_byte_is_a_clear_error(tmp_path):
    """Names read from damaged files (a solver's net or weights) can hold a NUL, which open() refuses."""
    with pytest.raises(me.WeightsError, match="cannot read .caffemodel: embedded null byte"):
        me.Net(DEPLOY, phase=me.TEST).copy_from(str(tmp_path / "w\0.caffemodel"))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "tiny\\0net.prototxt" base_lr: 0.1 lr_policy: "fixed"\n')
    with pytest.raises(me.PrototxtError, match="cannot read: embedded null byte"):
        me.SGDSolver(str(solver))
