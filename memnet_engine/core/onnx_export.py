"""ONNX export of an inference net: the engine's forward as standard ONNX operators (opset 17).

Needs the ``onnx`` package (``pip install 'memnet-engine[onnx]'``).  Every net input becomes a graph
input with a dynamic batch, height and width (channels fixed); every net output a graph output of the
same name.  Weights are float32 initializers named as ``core/convert.py``'s torch-style names
(``<layer>.weight``, or the shared param name such as ``conv01_wa``, stored once).

=============  =================================================================================
Caffe          ONNX
=============  =================================================================================
Input          a graph input
Convolution    Conv (group, dilations, strides, pads)
BatchNorm      BatchNormalization with mean = sum / s and var = var sum / s, Caffe's eps; a per-channel
               Scale reading only its output is folded in as the node's scale and bias (else 1 and 0)
Scale          Mul (+ Add for the bias), the scale shaped to broadcast from ``axis``; a second bottom
               is Unsqueezed to that shape
ReLU           Relu, or LeakyRelu with alpha = negative_slope
Eltwise        SUM: Sum of the bottoms, each multiplied by its coeff where coeff != 1; PROD: Mul; MAX: Max
Concat         Concat on the canonical axis (or ``concat_dim``)
Split          nothing: an ONNX value may have any number of readers
=============  =================================================================================

Caffe blobs written in place get one ONNX value per write; the last write keeps the blob's name.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_output
from .backend import to_numpy
from .errors import MemnetError, NetError
from .layers.convolution import ConvGeometry
from .proto import caffe_pb2 as pb

if TYPE_CHECKING:
    import onnx

    from .net import Net

OPSET = 17
IR_VERSION = 8  # ONNX 1.12's, the release that introduced opset 17: older runtimes load the model too
EXPORTED_TYPES = ("Input", "Convolution", "BatchNorm", "Scale", "ReLU", "Eltwise", "Concat", "Split")


def import_onnx():
    """The ``onnx`` module, or a MemnetError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise MemnetError("ONNX export needs the onnx package: pip install 'memnet-engine[onnx]'") from None
    return onnx


class _Graph:
    """ONNX nodes, initializers and value names for a Caffe net, one layer at a time."""

    def __init__(self, net: "Net", onnx_module):
        self.net, self.onnx = net, onnx_module
        self.nodes: list = []
        self.initializers: dict[str, "onnx.TensorProto"] = {}
        self.value: dict[str, str] = {}  # Caffe blob -> its current ONNX value
        self.writes_left = Counter(top for layer, tops in zip(net.layers, net.top_names)
                                   if layer.type not in ("Input", "Split") for top in tops)
        self.value_names = set(net.blobs)  # a blob's name is kept for its last write
        self.node_names: set[str] = set()

    # ------------------------------------------------------------------ names and constants
    @staticmethod
    def _unique(name: str, taken: set[str]) -> str:
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        return candidate

    def fresh(self, name: str) -> str:
        """A new ONNX value name based on ``name``."""
        return self._unique(name, self.value_names)

    def write(self, blob: str, layer: str) -> str:
        """A new ONNX value for ``layer`` writing Caffe blob ``blob``: the blob's name for its last write."""
        self.writes_left[blob] -= 1
        final = self.writes_left[blob] == 0 and blob not in self.net.inputs
        self.value[blob] = blob if final else self.fresh(f"{blob}.{layer}")
        return self.value[blob]

    def constant(self, name: str, array) -> str:
        """An initializer (float32; int64 for integer ``array``), stored once per name and shape."""
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        existing = self.initializers.get(name)
        if existing is not None and tuple(existing.dims) == array.shape:
            return name
        name = self.fresh(name)
        self.initializers[name] = self.onnx.numpy_helper.from_array(array, name)
        return name

    def add(self, op: str, inputs: list[str], output: str, name: str, **attributes) -> str:
        """Append node ``op`` (named after ``name``) writing ``output``; returns ``output``."""
        node = self.onnx.helper.make_node(op, inputs, [output], name=self._unique(name, self.node_names), **attributes)
        self.nodes.append(node)
        return output

    def param_name(self, layer, index: int, suffix: str) -> str:
        """The shared param's name if the prototxt gives one, else ``<layer>.<suffix>``."""
        specs = layer.param.param
        return specs[index].name if index < len(specs) and specs[index].name else f"{layer.name}.{suffix}"


def _blob(layer, index: int) -> np.ndarray:
    return to_numpy(layer.blobs[index].data).astype(np.float32)


def _canonical_axis(layer, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise NetError(f"layer '{layer.name}': axis {axis} out of range for a {rank}-axis blob")
    return axis + rank if axis < 0 else axis


def _convolution(g: _Graph, layer, x: str, top: str) -> None:
    p = layer.param.convolution_param
    geometry = ConvGeometry.from_param(p, layer.name)
    inputs = [x, g.constant(g.param_name(layer, 0, "weight"), _blob(layer, 0))]
    if len(layer.blobs) > 1:
        inputs.append(g.constant(g.param_name(layer, 1, "bias"), _blob(layer, 1)))
    ph, pw = geometry.pad
    g.add("Conv", inputs, g.write(top, layer.name), layer.name, kernel_shape=list(geometry.kernel),
          pads=[ph, pw, ph, pw], strides=list(geometry.stride), dilations=list(geometry.dilation), group=int(p.group))


def _batch_norm_statistics(layer) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, variance, eps) as Caffe's BatchNorm uses them in inference: the stored sums divided by s."""
    p = layer.param.batch_norm_param
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else layer.param.phase == pb.TEST
    if not global_stats:
        raise NetError(f"layer '{layer.name}': a BatchNorm using batch statistics (use_global_stats false or a "
                       "TRAIN net) cannot be exported; export the deploy net (TEST phase)")
    s = _blob(layer, 2).reshape(-1)[0]
    factor = np.float32(0) if s == 0 else np.float32(1) / s
    return _blob(layer, 0) * factor, _blob(layer, 1) * factor, float(p.eps)


def _folds_into_batch_norm(g: _Graph, scale, scale_bottoms: list[str], bn_top: str) -> bool:
    """True when ``scale`` (the next layer) is a learned per-channel Scale reading only ``bn_top`` (the
    net inserts a Split where a blob has several readers, so reading it means reading it alone)."""
    if scale is None or scale.type != "Scale" or scale_bottoms != [bn_top] or len(scale.blobs) < 1:
        return False
    shape = g.net.blobs[bn_top].shape
    axis = _canonical_axis(scale, scale.param.scale_param.axis, len(shape))
    return len(shape) >= 2 and axis == 1 and scale.blobs[0].shape == (shape[1],)


def _batch_norm(g: _Graph, layer, x: str, top: str, scale=None) -> None:
    """BatchNormalization for ``layer``, with the folded Scale's weight and bias (else 1 and 0)."""
    if len(g.net.blobs[top].shape) < 2:
        raise NetError(f"layer '{layer.name}': ONNX BatchNormalization needs an (N, C, ...) input")
    mean, var, eps = _batch_norm_statistics(layer)
    gamma = (f"{layer.name}.unit_scale", np.ones_like(mean)) if scale is None else \
        (g.param_name(scale, 0, "weight"), _blob(scale, 0))
    beta = (g.param_name(scale, 1, "bias"), _blob(scale, 1)) if scale is not None and \
        scale.param.scale_param.bias_term else (f"{layer.name}.zero_bias", np.zeros_like(mean))
    inputs = [x, g.constant(*gamma), g.constant(*beta), g.constant(f"{layer.name}.running_mean", mean),
              g.constant(f"{layer.name}.running_var", var)]
    g.add("BatchNormalization", inputs, g.write(top, (scale or layer).name), layer.name, epsilon=eps)


def _scale(g: _Graph, layer, bottoms: list[str], bottom_names: list[str], top: str) -> None:
    p = layer.param.scale_param
    rank = len(g.net.blobs[bottom_names[0]].shape)
    if len(bottoms) == 2:
        s_rank = len(g.net.blobs[bottom_names[1]].shape)
        axis = 0 if s_rank == 0 else _canonical_axis(layer, p.axis, rank)
        trailing = rank - axis - s_rank
        s = bottoms[1]
        if trailing:
            axes = g.constant(f"{layer.name}.axes", np.arange(s_rank, s_rank + trailing))
            s = g.add("Unsqueeze", [s, axes], g.fresh(f"{layer.name}.scale"), f"{layer.name}.unsqueeze")
    else:
        shape = layer.blobs[0].shape
        axis = 0 if not shape else _canonical_axis(layer, p.axis, rank)
        broadcast = shape + (1,) * (rank - axis - len(shape))
        s = g.constant(g.param_name(layer, 0, "weight"), _blob(layer, 0).reshape(broadcast))
    if not p.bias_term:
        g.add("Mul", [bottoms[0], s], g.write(top, layer.name), layer.name)
        return
    bias = _blob(layer, len(layer.blobs) - 1)
    broadcast = bias.shape + (1,) * (rank - axis - bias.ndim)
    scaled = g.add("Mul", [bottoms[0], s], g.fresh(f"{layer.name}.scaled"), layer.name)
    b = g.constant(g.param_name(layer, len(layer.blobs) - 1, "bias"), bias.reshape(broadcast))
    g.add("Add", [scaled, b], g.write(top, layer.name), f"{layer.name}.bias")


def _eltwise(g: _Graph, layer, bottoms: list[str], top: str) -> None:
    p = layer.param.eltwise_param
    out = g.write(top, layer.name)
    if p.operation == pb.EltwiseParameter.MAX:
        g.add("Max", bottoms, out, layer.name)
    elif p.operation == pb.EltwiseParameter.PROD:
        product = bottoms[0]
        for k, b in enumerate(bottoms[1:], start=1):
            product = g.add("Mul", [product, b], out if k == len(bottoms) - 1 else g.fresh(f"{layer.name}.{k}"),
                            layer.name)
    else:
        terms = [b if c == 1 else g.add("Mul", [b, g.constant(f"{layer.name}.coeff{k}", np.float32(c))],
                                        g.fresh(f"{layer.name}.term{k}"), f"{layer.name}.coeff{k}")
                 for k, (b, c) in enumerate(zip(bottoms, list(p.coeff) or [1.0] * len(bottoms)))]
        g.add("Sum", terms, out, layer.name)


def _concat(g: _Graph, layer, bottoms: list[str], bottom_names: list[str], top: str) -> None:
    p = layer.param.concat_param
    rank = len(g.net.blobs[bottom_names[0]].shape)
    axis = _canonical_axis(layer, int(p.concat_dim) if p.HasField("concat_dim") else p.axis, rank)
    g.add("Concat", bottoms, g.write(top, layer.name), layer.name, axis=axis)


def _graph_input(g: _Graph, name: str, several: bool) -> "onnx.ValueInfoProto":
    shape = g.net.blobs[name].shape
    dynamic = ["batch", None, "height", "width"] if len(shape) == 4 else [None] * len(shape)
    dims = [d if symbol is None else (f"{name}_{symbol}" if several else symbol)
            for d, symbol in zip(shape, dynamic)]
    g.value[name] = name
    return g.onnx.helper.make_tensor_value_info(name, g.onnx.TensorProto.FLOAT, dims)


def onnx_model(net: "Net") -> "onnx.ModelProto":
    """``net`` (an inference net with its weights) as a checked ONNX model; see the module docstring."""
    onnx = import_onnx()
    g = _Graph(net, onnx)
    inputs = [_graph_input(g, name, len(net.inputs) > 1) for name in net.inputs]
    layers = list(zip(net.layers, net.bottom_names, net.top_names))
    i = 0
    while i < len(layers):
        layer, bottom_names, tops = layers[i]
        i += 1
        if layer.type not in EXPORTED_TYPES:
            raise NetError(f"layer '{layer.name}': type {layer.type} has no ONNX export (exported: "
                           f"{', '.join(EXPORTED_TYPES)}); export the deploy net")
        bottoms = [g.value[b] for b in bottom_names]
        if layer.type == "Input":
            continue
        if layer.type == "Split":
            g.value.update((top, bottoms[0]) for top in tops)
        elif layer.type == "Convolution":
            _convolution(g, layer, bottoms[0], tops[0])
        elif layer.type == "BatchNorm":
            after = layers[i] if i < len(layers) else (None, [], [])
            if _folds_into_batch_norm(g, after[0], after[1], tops[0]):
                g.writes_left[tops[0]] -= 1  # the BatchNorm's own output is never materialised
                _batch_norm(g, layer, bottoms[0], after[2][0], scale=after[0])
                i += 1
            else:
                _batch_norm(g, layer, bottoms[0], tops[0])
        elif layer.type == "Scale":
            _scale(g, layer, bottoms, bottom_names, tops[0])
        elif layer.type == "ReLU":
            slope = float(layer.param.relu_param.negative_slope)
            out = g.write(tops[0], layer.name)
            if slope:
                g.add("LeakyRelu", bottoms, out, layer.name, alpha=slope)
            else:
                g.add("Relu", bottoms, out, layer.name)
        elif layer.type == "Eltwise":
            _eltwise(g, layer, bottoms, tops[0])
        else:
            _concat(g, layer, bottoms, bottom_names, tops[0])
    outputs = []
    for name in net.outputs:
        value = g.value[name]
        if value != name and name not in net.inputs:  # written by a Split: an Identity gives it the blob's name
            value = g.add("Identity", [value], name, name)
        dims: list = [None] * len(net.blobs[name].shape)
        dims[1:2] = net.blobs[name].shape[1:2]  # channels are fixed, the other sizes follow the input
        outputs.append(onnx.helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, dims))
    graph = onnx.helper.make_graph(g.nodes, net.name or "net", inputs, outputs, list(g.initializers.values()))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="memnet-engine", doc_string=f"Caffe net '{net.name}'")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(net: "Net", path: "str | os.PathLike") -> "onnx.ModelProto":
    """Write ``net`` as an ONNX model to ``path`` (atomically); returns the model."""
    model = onnx_model(net)
    with atomic_output(os.fspath(path)) as f:
        f.write(model.SerializeToString())
    return model
