"""Net construction and execution: splits, in-place, sharing, loss weights, backward planning, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from memnet_engine.core.gradcheck import check_net_params


def net_from_text(text: str, phase=me.TRAIN, **kwargs) -> me.Net:
    return me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=phase, **kwargs)


INPUT = 'layer {{ name: "{0}" type: "Input" top: "{0}" input_param {{ shape {{ {1} }} }} }}\n'
CONV = ('layer {{ name: "{0}" type: "Convolution" bottom: "{1}" top: "{2}" {3} convolution_param {{ num_output: 2 '
        'kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "gaussian" }} }} }}\n')
SHAPE = "dim: 2 dim: 2 dim: 4 dim: 4"


def test_splits_are_inserted_and_named_as_caffe_does():
    text = (INPUT.format("x", SHAPE) + CONV.format("c1", "x", "y", "") + CONV.format("c2", "y", "z", "")
            + 'layer { name: "sum" type: "Eltwise" bottom: "y" bottom: "z" bottom: "x" top: "out" }')
    net = net_from_text(text)
    assert [layer.type for layer in net.layers] == ["Input", "Split", "Convolution", "Split", "Convolution", "Eltwise"]
    assert net.layers[1].name == "x_x_0_split" and net.top_names[1] == ["x_x_0_split_0", "x_x_0_split_1"]
    assert net.bottom_names[5] == ["y_c1_0_split_1", "z", "x_x_0_split_1"]
    assert net.inputs == ["x"] and net.outputs == ["out"]


def test_split_sums_the_gradients_of_all_readers():
    text = (INPUT.format("x", "dim: 3") + 'force_backward: true\n'
            'layer { name: "double" type: "Eltwise" bottom: "x" bottom: "x" top: "y" eltwise_param { coeff: 2 coeff: 3 } }')
    net = net_from_text(text)
    net.blobs["x"].data[...] = [1, 2, 3]
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, [5, 10, 15])
    net.blobs["y"].diff[...] = [1, 1, 2]
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, [5, 5, 10])


def test_in_place_layers_share_the_blob():
    text = (INPUT.format("x", "dim: 1 dim: 4") + 'force_backward: true\n'
            'layer { name: "s" type: "Scale" bottom: "x" top: "h" scale_param { filler { type: "constant" value: -2 } } }\n'
            'layer { name: "r" type: "ReLU" bottom: "h" top: "h" }')
    net = net_from_text(text)
    assert list(net.blobs) == ["x", "h"]
    out = net.forward(x=np.array([[1.0, -1.0, 2.0, -3.0]]))
    np.testing.assert_allclose(out["h"], [[0, 2, 0, 6]])
    grads = net.backward(h=np.ones((1, 4)))
    np.testing.assert_allclose(grads["x"], [[0, -2, 0, -2]])
    np.testing.assert_allclose(net.params["s"][0].diff, [0, -1, 0, -3])


def test_named_params_share_data_and_diff_and_accumulate():
    shared = 'param { name: "w" } param { name: "b" }'
    text = (INPUT.format("x", SHAPE) + 'force_backward: true\n' + CONV.format("c1", "x", "y", shared)
            + CONV.format("c2", "y", "z", shared))
    net = net_from_text(text, dtype=np.float64)
    assert net.params["c1"][0] is net.params["c2"][0] and net.params["c1"][1] is net.params["c2"][1]
    assert len(net.learnable_params) == 2
    net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["x"].shape)
    check_net_params(net).assert_ok()


def test_shared_params_must_agree():
    text = (INPUT.format("x", SHAPE) + CONV.format("c1", "x", "y", 'param { name: "w" lr_mult: 1 }')
            + CONV.format("c2", "y", "z", 'param { name: "w" lr_mult: 2 }'))
    with pytest.raises(me.NetError, match="mismatched lr_mult"):
        net_from_text(text)
    text = (INPUT.format("x", SHAPE) + CONV.format("c1", "x", "y", 'param { name: "w" }')
            + 'layer { name: "c2" type: "Convolution" bottom: "y" top: "z" param { name: "w" } '
              'convolution_param { num_output: 2 kernel_size: 1 } }')
    with pytest.raises(me.NetError, match="shape mismatch"):
        net_from_text(text)


def test_loss_weight_seeds_the_loss_diff_and_weights_the_loss():
    text = (INPUT.format("a", "dim: 2 dim: 3") + INPUT.format("b", "dim: 2 dim: 3")
            + 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" loss_weight: 3 }')
    net = net_from_text(text)
    net.blobs["a"].data[...] = 1.0
    assert net.blobs["l"].diff == 3.0
    assert net.forward_range() == pytest.approx(3 * 6 / 4)


def test_backward_runs_only_where_a_loss_is_reached():
    text = (INPUT.format("x", SHAPE) + INPUT.format("t", SHAPE) + CONV.format("c1", "x", "y", "")
            + CONV.format("frozen", "y", "z", "param { lr_mult: 0 } param { lr_mult: 0 }")
            + CONV.format("side", "y", "unused", "")
            + 'layer { name: "l" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "l" }')
    net = net_from_text(text)
    need = dict(zip([layer.name for layer in net.layers], net.layer_need_backward))
    assert need["c1"] and need["frozen"] and need["l"] and not need["side"] and not need["x"]
    assert net.layer_dict["frozen"].param_propagate_down == [False, False]
    forced = net_from_text("force_backward: true\n" + text)
    assert all(forced.layer_need_backward)
    assert forced.layer_dict["frozen"].param_propagate_down == [True, True]


def test_propagate_down_false_skips_a_bottom():
    text = (INPUT.format("x", SHAPE) + INPUT.format("t", SHAPE) + CONV.format("c", "x", "y", "")
            + 'layer { name: "e" type: "Eltwise" bottom: "y" bottom: "y" top: "z" propagate_down: false '
              'propagate_down: true }\n'
            'layer { name: "l" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "l" }')
    net = net_from_text(text)
    assert net.bottom_need_backward[net.layers.index(net.layer_dict["e"])] == [False, True]
    net.blobs["x"].data[...] = 1.0
    net.forward_backward()
    z_diff = net.blobs["z"].diff
    np.testing.assert_allclose(net.blobs["y"].diff, z_diff)  # only the second reader contributes


def test_phase_and_state_rules_filter_layers():
    text = (INPUT.format("x", "dim: 2") +
            'layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }\n'
            'layer { name: "test_only" type: "ReLU" bottom: "x" top: "b" include { phase: TEST } }\n'
            'layer { name: "staged" type: "ReLU" bottom: "x" top: "c" include { stage: "deep" min_level: 1 } }\n'
            'layer { name: "not_deep" type: "ReLU" bottom: "x" top: "d" exclude { stage: "deep" } }\n')
    names = lambda net: [layer.name for layer in net.layers if layer.type == "ReLU"]  # noqa: E731
    assert names(net_from_text(text, phase="TRAIN")) == ["train_only", "not_deep"]
    assert names(net_from_text(text, phase=me.TEST, stages=["deep"], level=1)) == ["test_only", "staged"]
    assert names(net_from_text(text, phase=me.TEST, stages=["deep"])) == ["test_only"]


def test_legacy_net_inputs_become_an_input_layer():
    net = net_from_text('input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n'
                        'layer { name: "r" type: "ReLU" bottom: "data" top: "out" }')
    assert net.layers[0].type == "Input" and net.layers[0].name == "input"
    assert net.inputs == ["data"] and net.blobs["data"].shape == (1, 2, 3, 4)


def test_reshape_follows_new_input_shapes():
    net = net_from_text(INPUT.format("x", SHAPE) + CONV.format("c", "x", "y", ""))
    net.blobs["x"].reshape((1, 2, 7, 5))
    net.reshape()
    assert net.blobs["y"].shape == (1, 2, 7, 5)
    net.blobs["x"].data[...] = 1.0
    assert net.forward()["y"].shape == (1, 2, 7, 5)


def test_freeing_intermediates_keeps_the_outputs_identical():
    text = (INPUT.format("x", SHAPE) + CONV.format("c1", "x", "y", "") + CONV.format("c2", "y", "z", ""))
    net = net_from_text(text, phase=me.TEST)
    net.blobs["x"].data[...] = np.random.default_rng(1).standard_normal(net.blobs["x"].shape)
    full = net.forward()["z"].copy()
    lean = net.forward(keep_intermediates=False)["z"]
    np.testing.assert_array_equal(full, lean)
    assert net.blobs["y"].data_released and not net.blobs["x"].data_released
    with pytest.raises(me.ReleasedBlobError, match="blob 'y'"):
        net.blobs["y"].data


@pytest.mark.parametrize("text, message", [
    (INPUT.format("x", "dim: 2") + 'layer { name: "bad" type: "Frobnicate" bottom: "x" top: "y" }',
     "layer 'bad': unknown layer type 'Frobnicate'"),
    (INPUT.format("x", "dim: 2") + 'layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }',
     "layer 'r' \\(ReLU\\): unknown bottom blob 'nope'"),
    (INPUT.format("x", "dim: 2") + 'layer { name: "r1" type: "ReLU" bottom: "x" top: "y" }\n'
     'layer { name: "r2" type: "ReLU" bottom: "x" top: "y" }', "layer 'r2' \\(ReLU\\): top blob 'y' is produced"),
    (INPUT.format("a", "dim: 2") + INPUT.format("b", "dim: 3")
     + 'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }', "layer 'sum'.*shapes differ"),
])
def test_errors_name_the_layer(text, message):
    with pytest.raises(me.NetError, match=message):
        net_from_text(text)


def test_malformed_prototxt_reports_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "n"\nlayer {\n  name: "x"\n  typo: "Input"\n}\n')
    with pytest.raises(me.PrototxtError, match=r"broken\.prototxt:4:3: .*typo") as info:
        me.Net(str(path))
    assert "\n" not in str(info.value)


def test_v1_layers_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "old.prototxt"
    path.write_text('layers { name: "x" bottom: "a" top: "b" }\n')
    with pytest.raises(me.PrototxtError, match="V1 'layers"):
        me.Net(str(path))


def test_deploy_from_train_drops_data_labels_and_losses():
    from memnet_engine.core.net_param import deploy_from_train

    text = ('layer { name: "d" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN } '
            'hdf5_data_param { source: "x.txt" batch_size: 2 } }\n'
            + CONV.format("c", "data", "y", "") +
            'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "y" top: "out" }\n'
            'layer { name: "l" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "l" }\n'
            'layer { name: "gap" type: "Eltwise" bottom: "label" bottom: "out" top: "gap" }\n')
    train = text_format.Parse(text, me.caffe_pb2.NetParameter())
    deploy = deploy_from_train(train, {"data": (1, 2, 5, 6)})
    assert [layer.name for layer in deploy.layers] == [] and [layer.name for layer in deploy.layer] == [
        "input", "c", "sum"]
    net = me.Net(deploy, phase=me.TEST)
    assert net.inputs == ["data"] and net.outputs == ["out"] and net.blobs["out"].shape == (1, 2, 5, 6)
