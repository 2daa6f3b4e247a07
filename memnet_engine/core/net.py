"""Net: a graph of layers built from a Caffe NetParameter, with a pycaffe-like API.

Construction follows Caffe's Net::Init in one readable pass: upgrade legacy inputs ->
filter by NetState -> insert splits -> create and set up each layer (in-place tops,
duplicate-top checks) -> append parameters (sharing by name) -> decide which layers and
bottoms need backward -> collect outputs.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np

from . import layers as _layers  # noqa: F401  (registers every layer type)
from .backend import CPU, GPU, parse_device
from .blob import Blob
from .errors import NetError
from .layer import Layer, create_layer
from .memory import NetBudget
from .memory_plan import Schedule, run_backward, run_forward
from .net_param import filter_net, insert_splits, upgrade_net_input
from .param_buffer import ParamBuffer
from .proto import caffe_pb2 as pb
from .prototxt import read_net_param
from .workspace import Workspace

TRAIN = pb.TRAIN
TEST = pb.TEST


def parse_phase(phase: "int | str") -> int:
    if isinstance(phase, str):
        try:
            return {"TRAIN": TRAIN, "TEST": TEST}[phase.upper()]
        except KeyError:
            raise ValueError(f"unknown phase {phase!r}: use TRAIN or TEST") from None
    if phase not in (TRAIN, TEST):
        raise ValueError(f"unknown phase {phase!r}: use TRAIN or TEST")
    return int(phase)


class LearnableParam:
    """One learnable blob (shared uses counted once) with its lr and decay multipliers."""

    __slots__ = ("blob", "lr_mult", "decay_mult", "has_lr", "has_decay", "owner", "name")

    def __init__(self, blob: Blob, spec: pb.ParamSpec, owner: str):
        self.blob = blob
        self.lr_mult = float(spec.lr_mult)
        self.decay_mult = float(spec.decay_mult)
        self.has_lr = spec.HasField("lr_mult")
        self.has_decay = spec.HasField("decay_mult")
        self.owner = owner
        self.name = spec.name


class Net:
    """A Caffe net.

    >>> net = Net("deploy.prototxt", phase=TEST, weights="w.caffemodel", device="cpu")
    >>> net.blobs["data"].data[...] = image
    >>> out = net.forward()
    """

    def __init__(self, net_file: "str | os.PathLike | pb.NetParameter", phase: "int | str" = TEST,
                 weights: "str | os.PathLike | None" = None, device: str = CPU, *, level: int = 0,
                 stages: Iterable[str] = (), dtype=np.float32, math: str = "strict"):
        self.phase = parse_phase(phase)
        kind, self.device_id = parse_device(device)
        self.device = kind
        if kind == GPU:
            from .backend import cupy_module
            cupy_module().cuda.Device(self.device_id).use()
        self.dtype = np.dtype(dtype)
        self.source = None if isinstance(net_file, pb.NetParameter) else os.fspath(net_file)
        net_dir = os.path.dirname(os.path.abspath(self.source)) if self.source else os.getcwd()

        param = read_net_param(net_file)
        self.name = param.name
        self.source_param = pb.NetParameter()  # as read, before any transformation
        self.source_param.CopyFrom(param)
        upgrade_net_input(param)
        state = pb.NetState(phase=self.phase, level=level)
        state.stage.extend(stages)
        filter_net(param, state)
        insert_splits(param)
        for lp in param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
        self.force_backward = param.force_backward

        self.layers: list[Layer] = []
        self.blobs: "OrderedDict[str, Blob]" = OrderedDict()
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
        self.inputs: list[str] = []
        self.learnable_params: list[LearnableParam] = []
        self._param_owner: dict[str, tuple[str, int]] = {}
        self._param_users: list[tuple[Layer, int, int]] = []  # (layer, blob index, learnable param index)
        # One scratch pool lent to all layers (they run one at a time), kept between iterations; ``math``
        # is the GEMM precision on the GPU: "strict" float32 or "tf32" (see core/workspace.py).
        self.workspace = Workspace(self.device, math)
        self._build(param, net_dir)
        self._shaped_inputs = self._input_shapes()
        self._plan_backward()
        self.schedule = Schedule(self)
        self.param_buffer = ParamBuffer(self.learnable_params, self._param_users, self.device, self.dtype)
        for layer in self.layers:
            layer.workspace = self.workspace
        self.params: "OrderedDict[str, list[Blob]]" = OrderedDict(
            (layer.name, layer.blobs) for layer in self.layers if layer.blobs)
        self.layer_dict: "OrderedDict[str, Layer]" = OrderedDict((layer.name, layer) for layer in self.layers)
        if weights is not None:
            self.copy_from(weights)

    # ------------------------------------------------------------------ building
    def _build(self, param: pb.NetParameter, net_dir: str) -> None:
        available: dict[str, None] = {}
        self._blob_needs_backward: dict[str, bool] = {}
        self.bottom_need_backward: list[list[bool]] = []
        self.layer_need_backward: list[bool] = []
        budget = NetBudget(self.name, self.device, self.dtype.itemsize)
        for lp in param.layer:
            layer = create_layer(lp, self.device, self.dtype, net_dir)
            bottoms, need_backward, bottom_nb = [], False, []
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"layer '{lp.name}': propagate_down must be unspecified or given once per bottom")
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise NetError(f"layer '{lp.name}' ({lp.type}): bottom blob '{name}' is not available "
                                   "(unknown, or already consumed by an earlier layer)")
                del available[name]
                bottoms.append(self.blobs[name])
                need_backward |= self._blob_needs_backward[name]
                bottom_nb.append(lp.propagate_down[j] if lp.propagate_down else self._blob_needs_backward[name])
            tops = []
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and name == lp.bottom[j]:
                    tops.append(self.blobs[name])  # in-place
                elif name in self.blobs:
                    raise NetError(f"layer '{lp.name}' ({lp.type}): top blob '{name}' is produced by more "
                                   "than one layer")
                else:
                    blob = Blob((), self.dtype, self.device, name=name)
                    self.blobs[name] = blob
                    self._blob_needs_backward[name] = False
                    tops.append(blob)
                    if lp.type == "Input":
                        self.inputs.append(name)
                available[name] = None
            layer.setup(bottoms, tops)  # user mistakes raise NetError naming the layer; bugs surface as themselves
            budget.add(layer, tops)
            need_backward |= self._append_params(layer)
            self.layers.append(layer)
            self.bottom_names.append(list(lp.bottom))
            self.top_names.append(list(lp.top))
            self.bottom_need_backward.append(bottom_nb)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for name in lp.top:
                    self._blob_needs_backward[name] = True
        self.outputs: list[str] = sorted(available)  # Caffe keeps them in a std::set: sorted by name

    def _append_params(self, layer: Layer) -> bool:
        """Register ``layer``'s parameter blobs, sharing named ones; True if any has lr_mult != 0."""
        specs = layer.param.param
        if len(specs) > len(layer.blobs):
            raise NetError(f"layer '{layer.name}': {len(specs)} param specs given for {len(layer.blobs)} "
                           "parameter blobs")
        any_learning = False
        for i in range(len(layer.blobs)):
            spec = specs[i] if i < len(specs) else pb.ParamSpec()
            layer.param_propagate_down[i] = spec.lr_mult != 0
            any_learning |= spec.lr_mult != 0
            if not spec.name or spec.name not in self._param_owner:
                self.learnable_params.append(LearnableParam(layer.blobs[i], spec, layer.name))
                self._param_users.append((layer, i, len(self.learnable_params) - 1))
                if spec.name:
                    self._param_owner[spec.name] = (layer.name, len(self.learnable_params) - 1)
                continue
            owner_layer, index = self._param_owner[spec.name]
            self._param_users.append((layer, i, index))
            shared = self.learnable_params[index]
            mine = layer.blobs[i]
            if spec.share_mode == pb.ParamSpec.PERMISSIVE:
                if mine.count != shared.blob.count:
                    raise NetError(f"cannot share param '{spec.name}' owned by layer '{owner_layer}' with layer "
                                   f"'{layer.name}': count mismatch ({shared.blob.shape} vs {mine.shape})")
            elif mine.shape != shared.blob.shape:
                raise NetError(f"cannot share param '{spec.name}' owned by layer '{owner_layer}' with layer "
                               f"'{layer.name}': shape mismatch ({shared.blob.shape} vs {mine.shape})")
            if spec.HasField("lr_mult"):
                if shared.has_lr and shared.lr_mult != spec.lr_mult:
                    raise NetError(f"shared param '{spec.name}' has mismatched lr_mult: {shared.lr_mult} in "
                                   f"layer '{owner_layer}', {spec.lr_mult} in layer '{layer.name}'")
                shared.lr_mult, shared.has_lr = float(spec.lr_mult), True
            if spec.HasField("decay_mult"):
                if shared.has_decay and shared.decay_mult != spec.decay_mult:
                    raise NetError(f"shared param '{spec.name}' has mismatched decay_mult: {shared.decay_mult} in "
                                   f"layer '{owner_layer}', {spec.decay_mult} in layer '{layer.name}'")
                shared.decay_mult, shared.has_decay = float(spec.decay_mult), True
            if mine.shape == shared.blob.shape:
                layer.blobs[i] = shared.blob
            # else (permissive sharing) the ParamBuffer binds ``mine`` to a view of the owner's slot
        return any_learning

    def _plan_backward(self) -> None:
        """Skip backward where nothing reaches a loss (Caffe's pruning), then apply force_backward."""
        under_loss: set[str] = set()
        skip_backprop: set[str] = set()
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            contributes, skip = False, True
            for j, name in enumerate(self.top_names[i]):
                if layer.loss(j) or name in under_loss:
                    contributes = True
                if name not in skip_backprop:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[i] and skip:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_names[i])
            if not contributes:
                self.layer_need_backward[i] = False
            for j, name in enumerate(self.bottom_names[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip_backprop.add(name)
        if self.force_backward:
            for i, layer in enumerate(self.layers):
                self.layer_need_backward[i] = True
                for j, name in enumerate(self.bottom_names[i]):
                    self.bottom_need_backward[i][j] |= layer.allow_force_backward(j)
                layer.param_propagate_down = [True] * len(layer.blobs)
        for layer, needed in zip(self.layers, self.layer_need_backward):
            layer.needs_backward = needed

    # ------------------------------------------------------------------ running
    def _layer_blobs(self, i: int) -> tuple[list[Blob], list[Blob]]:
        return ([self.blobs[n] for n in self.bottom_names[i]], [self.blobs[n] for n in self.top_names[i]])

    def _index(self, name: "str | None", default: int) -> int:
        if name is None:
            return default
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(f"no layer named '{name}' in net '{self.name}'")

    def reshape(self) -> None:
        """Propagate new input shapes through every layer (after ``blobs[x].reshape``)."""
        for i, layer in enumerate(self.layers):
            layer.reshape(*self._layer_blobs(i))
        self._shaped_inputs = self._input_shapes()

    def _input_shapes(self) -> tuple:
        return tuple(self.blobs[name].shape for name in self.inputs)

    def _shaped_for_plan(self) -> None:
        """``reshape()`` where an input blob was reshaped since (pycaffe asks for that call; a memory plan
        needs every blob's shape before its pass, e.g. to size a zero-copy Concat's output early)."""
        if self._input_shapes() != self._shaped_inputs:
            self.reshape()

    def fuse_units(self, enabled: bool = True) -> None:
        """Run each BatchNorm -> Scale -> ReLU chain as one fused operation (the default) or layer by layer."""
        self.schedule = Schedule(self, fuse=enabled)

    def forward_range(self, start: int = 0, end: "int | None" = None, keep_intermediates: bool = True,
                      keep: Sequence[str] = ()):
        """Run layers ``start..end`` (inclusive) and return the total weighted loss (a float on the CPU, a
        0-d device array on the GPU, which ``float()`` reads).

        With ``keep_intermediates=False`` the memory plan frees each blob after its last reader
        (outputs, inputs and the blobs named in ``keep`` are kept; reading a freed blob raises).
        """
        end = len(self.layers) - 1 if end is None else end
        kept = None if keep_intermediates else frozenset(self._kept(keep))
        if kept is not None:
            self._shaped_for_plan()
        steps = self.schedule.forward_steps(start, end, kept)
        plan = None if kept is None else self.schedule.plan(self, steps, kept, backward=False)
        return run_forward(self, steps, plan)

    def _kept(self, extra: Sequence[str] = ()) -> set[str]:
        return set(self.outputs) | set(self.inputs) | set(extra)

    def backward_range(self, start: "int | None" = None, end: int = 0) -> None:
        """Back-propagate through layers ``start`` down to ``end`` (inclusive)."""
        start = len(self.layers) - 1 if start is None else start
        run_backward(self, self.schedule.backward_steps(start, end))

    def forward(self, blobs: "Sequence[str] | None" = None, start: "str | None" = None,
                end: "str | None" = None, keep_intermediates: bool = True, **inputs) -> dict:
        """pycaffe's forward: set ``inputs`` (name=array), run, return {output: data}."""
        for name, value in inputs.items():
            if name not in self.inputs:
                raise KeyError(f"'{name}' is not an input of net '{self.name}' (inputs: {self.inputs})")
            self.blobs[name].data[...] = self.blobs[name].xp.asarray(value)
        end_i = self._index(end, len(self.layers) - 1)
        names = list(self.outputs) if end is None else list(self.top_names[end_i])
        names += [b for b in (blobs or ()) if b not in names]
        unknown = [name for name in names if name not in self.blobs]
        if unknown:
            raise KeyError(f"no blob named {unknown} in net '{self.name}'")
        self.forward_range(self._index(start, 0), end_i, keep_intermediates, keep=names)
        return {name: self.blobs[name].data for name in names}

    def backward(self, diffs: "Sequence[str] | None" = None, start: "str | None" = None,
                 end: "str | None" = None, **top_diffs) -> dict:
        """pycaffe's backward: set output diffs (name=array), run, return {input: diff}."""
        for name, value in top_diffs.items():
            if name not in self.outputs:
                raise KeyError(f"'{name}' is not an output of net '{self.name}' (outputs: {self.outputs})")
            self.blobs[name].diff[...] = self.blobs[name].xp.asarray(value)
        self.backward_range(self._index(start, len(self.layers) - 1), self._index(end, 0))
        names = list(self.inputs) + [d for d in (diffs or ()) if d not in self.inputs]
        return {name: self.blobs[name].diff for name in names}

    def forward_backward(self, keep_intermediates: bool = True):
        """One forward and backward pass; returns the loss as ``forward_range`` does (Caffe's ForwardBackward).

        With ``keep_intermediates=False`` (a solver step) the memory plan frees what no later layer
        needs: afterwards only outputs, inputs, parameters and their gradients can be read.
        """
        if keep_intermediates:
            loss = self.forward_range()
            self.backward_range()
            return loss
        kept = frozenset(self._kept())
        self._shaped_for_plan()
        steps = self.schedule.forward_steps(0, len(self.layers) - 1, kept)
        plan = self.schedule.plan(self, steps, kept, backward=True)
        loss = run_forward(self, steps, plan)
        run_backward(self, steps, plan)
        return loss

    def clear_param_diffs(self) -> None:
        self.param_buffer.clear_diffs()

    def share_weights_with(self, other: "Net") -> None:
        """Make this net's layers use ``other``'s parameter blobs, by layer name (Caffe's ShareTrainedLayersWith)."""
        for layer in self.layers:
            source = other.layer_dict.get(layer.name)
            if source is None or not layer.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise NetError(f"layer '{layer.name}': {len(source.blobs)} vs {len(layer.blobs)} parameter blobs")
            for i, blob in enumerate(source.blobs):
                if blob.shape != layer.blobs[i].shape:
                    raise NetError(f"layer '{layer.name}' param {i}: shape {blob.shape} vs {layer.blobs[i].shape}")
                layer.blobs[i] = blob
        self.params = OrderedDict((layer.name, layer.blobs) for layer in self.layers if layer.blobs)

    # ------------------------------------------------------------------ weights
    def copy_from(self, path: "str | os.PathLike") -> None:
        """Load a binary .caffemodel, copying blobs into layers of the same name."""
        from .weights import copy_weights_from_file
        copy_weights_from_file(self, os.fspath(path))

    def save(self, path: "str | os.PathLike") -> None:
        """Write the weights as a binary .caffemodel (atomically: temp file + rename)."""
        from .weights import save_weights
        save_weights(self, os.fspath(path))

    def __repr__(self) -> str:
        return f"<Net '{self.name}' {len(self.layers)} layers, phase {pb.Phase.Name(self.phase)}, {self.device}>"
