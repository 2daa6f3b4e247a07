"""Small nets holding a BatchNorm -> Scale -> ReLU unit (shared by the CPU and GPU tests of the fused unit and the
memory plan)."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

import memnet_engine as me

UNIT = """
{force}
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 3 dim: 4 dim: 5 dim: 2 }} }} }}
layer {{ name: "c0" type: "Convolution" bottom: "x" top: "a" convolution_param {{ num_output: 3 kernel_size: 1
  weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "{bn_bottom}" top: "h" {bn} }}
layer {{ name: "sc" type: "Scale" bottom: "h" top: "h" scale_param {{ bias_term: {bias} filler {{ type: "gaussian" }}
  bias_filler {{ type: "gaussian" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" relu_param {{ negative_slope: {slope} }} }}
layer {{ name: "c1" type: "Convolution" bottom: "h" top: "y" {loss} convolution_param {{ num_output: 2 kernel_size: 1
  weight_filler {{ type: "gaussian" }} }} }}
"""


def unit_net(phase=me.TRAIN, bias: bool = True, slope: float = 0.0, force: bool = True, bn_bottom: str = "a",
             bn: str = "", dtype=np.float64, device: str = "cpu", seed: int = 3) -> me.Net:
    text = UNIT.format(force="force_backward: true" if force else "", bias=str(bias).lower(), slope=slope,
                       bn_bottom=bn_bottom, bn=bn, loss="" if force else "loss_weight: 1")
    me.set_random_seed(seed)
    net = me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=phase, dtype=dtype, device=device)
    rs = np.random.default_rng(seed)
    bn_layer = net.layer_dict["bn"]
    channels = bn_layer.blobs[0].shape
    bn_layer.blobs[0].data[...] = rs.standard_normal(channels) * 2.5
    bn_layer.blobs[1].data[...] = np.abs(rs.standard_normal(channels)) * 2.5 + 1
    bn_layer.blobs[2].data[...] = 2.5
    net.blobs["x"].data[...] = rs.standard_normal(net.blobs["x"].shape)
    return net


def pass_arrays(net: me.Net, seed: int = 4) -> dict[str, np.ndarray]:
    """Every blob's data and diff and every parameter after forward, top diff, backward (pycaffe's path)."""
    net.forward()
    net.blobs["y"].diff[...] = net.blobs["y"].xp.asarray(np.random.default_rng(seed).standard_normal(
        net.blobs["y"].shape))
    net.backward()
    arrays = {}
    for name, blob in net.blobs.items():
        arrays[f"data/{name}"] = me.to_numpy(blob.data).copy()
        arrays[f"diff/{name}"] = me.to_numpy(blob.diff).copy()
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = me.to_numpy(p.data).copy()
            arrays[f"pdiff/{layer}/{i}"] = me.to_numpy(p.diff).copy()
    return arrays


CONFIGS = {
    "train": {},
    "train_no_bias_leaky": {"bias": False, "slope": 0.1},
    "test_global_stats": {"phase": me.TEST},
    "train_forced_global_stats_leaky": {"bn": "batch_norm_param { use_global_stats: true }", "slope": 0.2},
    "train_bn_on_input_no_force": {"force": False, "bn_bottom": "x"},  # BatchNorm runs no backward (a loss on y)
}


CONCAT = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: %d dim: 2 dim: 4 dim: 3 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 3 kernel_size: 3 pad: 1
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "c2" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 3 kernel_size: 1
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e" }
layer { name: "bn" type: "BatchNorm" bottom: "e" top: "h" }
layer { name: "sc" type: "Scale" bottom: "h" top: "h" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "c3" type: "Convolution" bottom: "h" top: "y" convolution_param { num_output: 2 kernel_size: 1
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "cat" type: "Concat" bottom: "x" bottom: "e" top: "cat" }
layer { name: "c4" type: "Convolution" bottom: "cat" top: "z" convolution_param { num_output: 2 kernel_size: 1
  weight_filler { type: "gaussian" std: 0.5 } } }
"""


def concat_net(batch: int, device: str = "cpu", seed: int = 5) -> me.Net:
    """An Eltwise output read by a unit (whose backward needs it) and by a Concat: zero-copy material."""
    me.set_random_seed(seed)
    net = me.Net(text_format.Parse(CONCAT % batch, me.caffe_pb2.NetParameter()), phase=me.TRAIN,
                 dtype=np.float64, device=device)
    net.blobs["x"].data[...] = np.random.default_rng(seed).standard_normal(net.blobs["x"].shape)
    return net


def concat_nets_with_top_diffs(batch: int, device: str = "cpu") -> tuple[me.Net, me.Net]:
    """Two equal concat nets after a pycaffe forward, with the same diffs on their outputs y and z: one for a
    planned pass, one as its reference."""
    nets = concat_net(batch, device=device), concat_net(batch, device=device)
    for model in nets:
        model.forward()
        for name in ("y", "z"):
            model.blobs[name].diff[...] = np.random.default_rng(7).standard_normal(model.blobs[name].shape)
    return nets


def training_plan(net: me.Net):
    """The steps and memory plan of a planned forward + backward of the whole ``net``."""
    steps = net.schedule.forward_steps(0, len(net.layers) - 1)
    return steps, net.schedule.plan(net, steps, net._kept(), backward=True)
