"""Transformations Caffe applies to a NetParameter before building a net.

``upgrade_net_input`` (legacy inputs -> Input layer), ``filter_net`` (NetState rules) and
``insert_splits`` (a Split layer for every blob read by more than one layer).
"""
from __future__ import annotations

from collections import defaultdict

from .errors import NetError
from .proto import caffe_pb2 as pb


def upgrade_net_input(param: pb.NetParameter) -> None:
    """Turn legacy ``input:`` / ``input_dim:`` / ``input_shape`` fields into an Input layer."""
    if not param.input:
        return
    n = len(param.input)
    if param.input_shape and len(param.input_shape) != n:
        raise NetError(f"net '{param.name}': {n} inputs need {n} input_shape entries, got {len(param.input_shape)}")
    if param.input_dim and len(param.input_dim) != 4 * n:
        raise NetError(f"net '{param.name}': {n} inputs need {4 * n} input_dim values, got {len(param.input_dim)}")
    layer = pb.LayerParameter(name="input", type="Input")
    for i, name in enumerate(param.input):
        layer.top.append(name)
        shape = layer.input_param.shape.add()
        if param.input_shape:
            shape.CopyFrom(param.input_shape[i])
        elif param.input_dim:
            shape.dim.extend(param.input_dim[4 * i: 4 * i + 4])
    layers = [layer] + list(param.layer)
    del param.layer[:]
    param.layer.extend(layers)
    del param.input[:]
    del param.input_dim[:]
    del param.input_shape[:]


def _meets_rule(state: pb.NetState, rule: pb.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_net(param: pb.NetParameter, state: pb.NetState) -> None:
    """Drop layers whose include/exclude rules reject ``state``."""
    kept = []
    for layer in param.layer:
        if layer.include and layer.exclude:
            raise NetError(f"layer '{layer.name}': specify include rules or exclude rules, not both")
        if layer.include:
            keep = any(_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(_meets_rule(state, r) for r in layer.exclude)
        if keep:
            kept.append(layer)
    del param.layer[:]
    param.layer.extend(kept)


def split_layer_name(layer: str, blob: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(param: pb.NetParameter) -> None:
    """Give every blob version read more than once its own Split layer, named as Caffe names them."""
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = defaultdict(int)
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError(f"layer '{layer.name}' ({layer.type}): unknown bottom blob '{name}' "
                               f"(bottom {j}); no earlier layer produces it")
            source_of[(i, j)] = last_top[name]
            readers[last_top[name]] += 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
            if j < len(layer.loss_weight) and layer.loss_weight[j]:
                loss_weight[(i, j)] = layer.loss_weight[j]
                readers[(i, j)] += 1

    next_split: dict[tuple[int, int], int] = defaultdict(int)
    out = []
    for i, layer in enumerate(param.layer):
        new = pb.LayerParameter()
        new.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source_of[(i, j)]
            if readers[src] > 1:
                src_layer = param.layer[src[0]].name
                new.bottom[j] = split_blob_name(src_layer, name, src[1], next_split[src])
                next_split[src] += 1
        out.append(new)
        for j, name in enumerate(layer.top):
            count = readers[(i, j)]
            if count <= 1:
                continue
            split = pb.LayerParameter(name=split_layer_name(layer.name, name, j), type="Split", bottom=[name])
            weight = loss_weight.get((i, j), 0.0)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                del new.loss_weight[:]
                next_split[(i, j)] += 1
            out.append(split)
    del param.layer[:]
    param.layer.extend(out)


def deploy_from_train(param: pb.NetParameter, inputs: dict[str, tuple[int, ...]]) -> pb.NetParameter:
    """A deploy (TEST-phase inference) version of a training net.

    Its data layers are replaced by one Input layer with the blobs in ``inputs`` (name -> shape);
    loss layers, and every layer that needs a blob no longer produced (the labels), are dropped.
    """
    source = pb.NetParameter()
    source.CopyFrom(param)
    upgrade_net_input(source)
    filter_net(source, pb.NetState(phase=pb.TEST))
    deploy = pb.NetParameter(name=source.name)
    feed = deploy.layer.add(name="input", type="Input", top=list(inputs))
    for shape in inputs.values():
        feed.input_param.shape.add(dim=list(shape))
    available = set(inputs)
    for layer in source.layer:
        if layer.type in DATA_LAYER_TYPES or layer.type.endswith("Loss"):
            continue
        if all(name in available for name in layer.bottom):
            kept = deploy.layer.add()
            kept.CopyFrom(layer)
            del kept.include[:], kept.exclude[:], kept.loss_weight[:]
            kept.ClearField("phase")
            available.update(layer.top)
    return deploy


DATA_LAYER_TYPES = ("HDF5Data", "Input", "Data", "ImageData", "MemoryData", "DummyData", "WindowData")
