"""A user's mistake in a layer is a NetError naming the layer; a bug in a layer surfaces as itself."""
import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from memnet_engine.core.layers.relu import ReLULayer


def net_from_text(text: str, phase=me.TRAIN) -> me.Net:
    return me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=phase)


X = 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
SCALAR = 'layer { name: "s" type: "Input" top: "s" input_param { shape { } } }\n'


@pytest.mark.parametrize("text, message", [
    (X + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" param { lr_mult: 1 } }',
     "layer 'bn': BatchNorm statistics cannot be learned"),
    (X + 'layer { name: "cat" type: "Concat" bottom: "x" bottom: "x" top: "y" concat_param { axis: 4 } }',
     "layer 'cat': axis 4 out of range for a 4-axis blob"),
    (X + 'layer { name: "cat" type: "Concat" bottom: "x" bottom: "x" top: "y" concat_param { concat_dim: 7 } }',
     "layer 'cat': axis 7 out of range"),
    (X + 'layer { name: "sc" type: "Scale" bottom: "x" top: "y" scale_param { axis: -5 } }',
     "layer 'sc': axis -5 out of range"),
    ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: -3 } } }',
     r"layer 'in': input 'x' has a negative dimension \(1, -3\)"),
    (X + 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 '
         'kernel_size: 3 weight_filler { type: "gaussian" std: -1 } } }',
     "layer 'c': gaussian filler std must not be negative"),
    (X + 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 '
         'kernel_size: 3 weight_filler { type: "uniform" min: 1 max: 0 } } }',
     "layer 'c': uniform filler min 1 is above max 0"),
    (X + 'layer { name: "sc" type: "Scale" bottom: "x" top: "y" scale_param { num_axes: 0 '
         'filler { type: "positive_unitball" } } }', "layer 'sc': positive_unitball filler needs"),
    (SCALAR + 'layer { name: "sc" type: "Scale" bottom: "s" top: "y" }', "layer 'sc': axis 1 out of range for a "
                                                                          "0-axis blob"),
    ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 0 dim: 4 dim: 4 } } }\n'
     'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 '
     'weight_filler { type: "msra" } } }', "layer 'c': xavier/msra fillers need a non-empty blob"),
])
def test_user_mistakes_are_net_errors_naming_the_layer(text, message):
    with pytest.raises(me.NetError, match=message):
        net_from_text(text)


@pytest.mark.parametrize("data, message", [
    (np.float32(3.0), "must have the same, non-zero number of rows"),
    (np.array([b"ab", b"cd"]), "cannot read HDF5 file .*conversion"),
])
def test_unusable_hdf5_datasets_are_net_errors(tmp_path, data, message):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = data
    (tmp_path / "list.txt").write_text("a.h5\n")
    (tmp_path / "n.prototxt").write_text('layer { name: "d" type: "HDF5Data" top: "data" hdf5_data_param { '
                                         'source: "list.txt" batch_size: 1 } }')
    with pytest.raises(me.NetError, match=f"layer 'd': .*{message}"):
        me.Net(str(tmp_path / "n.prototxt"), phase=me.TRAIN)


def test_a_bug_in_a_forward_surfaces_as_itself(monkeypatch):
    net = net_from_text(X + 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')

    def broken_forward(self, bottoms, tops):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(ReLULayer, "forward_cpu", broken_forward)
    with pytest.raises(ValueError, match="operands could not be broadcast") as info:
        net.forward()
    assert not isinstance(info.value, me.MemnetError)


def test_a_new_input_size_that_does_not_fit_is_a_net_error():
    net = net_from_text(X + 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
                            'num_output: 2 kernel_size: 3 } }')
    net.blobs["x"].reshape((2, 5, 4, 4))
    with pytest.raises(me.NetError, match="layer 'c': input has 5 channels, weights expect 3"):
        net.forward()


@pytest.mark.parametrize("bug", [KeyError("blobs"), IndexError("list index out of range"),
                                 TypeError("unsupported operand"), ValueError("operands could not be broadcast"),
                                 OSError("disk")])
def test_a_bug_in_a_layer_surfaces_as_itself(monkeypatch, bug):
    def broken_setup(self, bottoms, tops):
        raise bug

    monkeypatch.setattr(ReLULayer, "layer_setup", broken_setup)
    with pytest.raises(type(bug)) as info:
        net_from_text(X + 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')
    assert info.value is bug and not isinstance(info.value, me.MemnetError)
