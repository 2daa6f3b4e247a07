"""Weights conversion: .caffemodel <-> .npz with Caffe names, and a PyTorch-style state dict.

Caffe-named arrays (``.npz``): key ``"<layer>/<i>"`` -> the i-th blob of that layer, in the
caffemodel's layer order, float32 (float64 where the caffemodel stored ``double_data``), in the
blob's declared shape (a legacy 4-D num/channels/height/width blob stays 4-D).  Only blob
*data* is converted (a caffemodel's diffs are dropped).  ``.npz`` files are always read with
``allow_pickle=False``.

PyTorch-style names (``torch_state_dict``), chosen by each layer's type and param specs:

=================================  ==========================================================
Caffe                              state-dict key(s)
=================================  ==========================================================
Convolution, Deconvolution,        ``<layer>.weight`` (O, I, kh, kw as torch.nn.Conv2d),
InnerProduct                       ``<layer>.bias``
a blob shared by param name        ``<param name>`` once (``conv01_wa``, ``conv01_ba``,
(any type but BatchNorm)           ``Recon_w``, ``Recon_b``); its sharing layers must agree
BatchNorm (mean, var, factor s)    ``<layer>.running_mean`` = mean / s, ``<layer>.running_var``
                                   = var / s (s = 0 gives 0, as Caffe); torch.nn.BatchNorm2d
                                   with ``affine=False`` and Caffe's ``eps`` (default 1e-5)
Scale                              ``<layer>.weight`` (per channel), ``<layer>.bias``
any other layer                    ``<layer>.blob<i>``
=================================  ==========================================================

A Caffe ``BatchNorm`` + ``Scale`` pair is torch's ``BatchNorm2d(affine=True)`` with the Scale's
weight/bias as its weight/bias; they are kept apart here so every Caffe layer maps to one prefix.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from collections import OrderedDict
from typing import Iterable

import numpy as np

from numpy.lib import format as npy_format

from .errors import WeightsError
from .memory import require, shape_bytes
from .proto import caffe_pb2 as pb
from .atomic import atomic_output
from .weights import DOUBLE_DATA, array_to_blob_proto, blob_proto_array, read_caffemodel, set_packed

Arrays = OrderedDict[str, np.ndarray]  # "<layer>/<i>" -> blob data, in layer order
_KEY = re.compile(r"^(?P<layer>.+)/(?P<index>\d+)$")
_WEIGHT_BIAS_TYPES = {"Convolution", "Deconvolution", "InnerProduct", "Scale"}


# ---------------------------------------------------------------------- Caffe-named arrays
def caffemodel_arrays(model: pb.NetParameter, origin: str) -> Arrays:
    """Every layer blob of a caffemodel as ``"<layer>/<i>"`` -> array, in file order."""
    arrays: Arrays = OrderedDict()
    seen: set[str] = set()
    for layer in model.layer:
        if layer.blobs and layer.name in seen:
            raise WeightsError(f"{origin}: layer '{layer.name}' appears twice with blobs")
        seen.add(layer.name)
        for i, proto in enumerate(layer.blobs):
            try:
                arrays[f"{layer.name}/{i}"] = blob_proto_array(proto)
            except WeightsError as ex:
                raise WeightsError(f"{origin}: layer '{layer.name}' blob {i}: {ex}") from None
    if not arrays:
        raise WeightsError(f"{origin}: holds no parameter blobs")
    return arrays


def group_by_layer(arrays: Arrays, origin: str) -> "OrderedDict[str, list[np.ndarray]]":
    """``"<layer>/<i>"`` arrays as layer -> [blob 0, blob 1, ...], checking the keys are complete."""
    indexed: "OrderedDict[str, dict[int, np.ndarray]]" = OrderedDict()
    for key, array in arrays.items():
        match = _KEY.match(key)
        if match is None:
            raise WeightsError(f"{origin}: key '{key}' is not '<layer>/<blob index>' (a Caffe-named .npz from "
                               "tools/convert_weights.py; torch-style exports cannot be converted back)")
        indexed.setdefault(match["layer"], {})[int(match["index"])] = array
    layers: "OrderedDict[str, list[np.ndarray]]" = OrderedDict()
    for name, blobs in indexed.items():
        if sorted(blobs) != list(range(len(blobs))):
            raise WeightsError(f"{origin}: layer '{name}' has blobs {sorted(blobs)}; expected 0..{len(blobs) - 1}")
        layers[name] = [blobs[i] for i in range(len(blobs))]
    return layers


def load_npz(path: str) -> Arrays:
    """Read a Caffe-named (or any float) .npz without pickles; errors name the file and key.

    Each member's header is checked before its data is read: float32 or float64, and a size
    that fits in memory (a few compressed bytes can declare gigabytes).
    """
    arrays: Arrays = OrderedDict()
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = set(npz.zip.namelist())
            for key in npz.files:
                _check_npy_header(npz.zip, key if key in members else key + ".npy", key, path)
                arrays[key] = _read_member(npz, key, path)
    except OSError as ex:
        raise WeightsError(f"{path}: cannot read .npz: {ex.strerror or ex}") from None
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as ex:
        raise WeightsError(f"{path}: truncated or corrupt .npz (or pickled objects, which are refused): {ex}") \
            from None
    if not arrays:
        raise WeightsError(f"{path}: holds no arrays")
    return arrays


def _check_npy_header(archive: zipfile.ZipFile, member_name: str, key: str, path: str) -> None:
    """The dtype and size an .npz member declares, checked before it is read."""
    with archive.open(member_name) as member:
        try:
            version = npy_format.read_magic(member)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        except Exception as ex:  # an untrusted header: any parse failure is a corrupt file
            raise WeightsError(f"{path}: array '{key}' has a corrupt .npy header ({type(ex).__name__}: {ex})") \
                from None
    if dtype.hasobject:
        raise WeightsError(f"{path}: array '{key}' holds Python objects (pickled objects, which are refused)")
    if dtype not in (np.float32, np.float64):
        raise WeightsError(f"{path}: array '{key}' has dtype {dtype}; expected float32 or float64")
    require(shape_bytes(shape, dtype.itemsize), f"{path}: array '{key}' of shape {shape}", error=WeightsError)


def _read_member(npz, key: str, path: str) -> np.ndarray:
    try:
        return npz[key]
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError) as ex:
        raise WeightsError(f"{path}: array '{key}' is truncated or corrupt: {ex}") from None


def save_npz(path: str, arrays: "dict[str, np.ndarray]") -> None:
    """Write ``arrays`` to ``path`` (.npz, no pickles) atomically."""
    with atomic_output(path) as f:
        np.savez(f, allow_pickle=False, **arrays)


def caffemodel_from_arrays(arrays: Arrays, origin: str, net: "pb.NetParameter | None" = None) -> pb.NetParameter:
    """A caffemodel NetParameter holding ``arrays``.

    Without ``net`` each layer carries only its name and blobs, which is all Caffe's
    CopyTrainedLayersFrom (and ``Net.copy_from``) reads.  With ``net`` the layers follow the
    net's order and carry their full definitions, as Caffe's own snapshots do; every array must
    belong to one of its layers.
    """
    layers = group_by_layer(arrays, origin)
    model = pb.NetParameter()
    if net is None:
        for name, blobs in layers.items():
            _add_blobs(model.layer.add(name=name), blobs)
        return model
    model.name = net.name
    unknown = [name for name in layers if name not in {lp.name for lp in net.layer}]
    if unknown:
        raise WeightsError(f"{origin}: layer '{unknown[0]}' is not in net '{net.name}' "
                           f"({len(unknown)} such layer(s)); is it the right --net?")
    for definition in net.layer:
        layer = model.layer.add()
        layer.CopyFrom(definition)
        del layer.blobs[:]
        _add_blobs(layer, layers.get(definition.name, []))
    return model


def _add_blobs(layer: pb.LayerParameter, blobs: Iterable[np.ndarray]) -> None:
    for array in blobs:
        proto = layer.blobs.add()
        if array.dtype == np.float64:
            proto.shape.dim.extend(array.shape)
            set_packed(proto, DOUBLE_DATA, array)
        else:
            array_to_blob_proto(array, proto)


def read_arrays(path: str) -> tuple[Arrays, "pb.NetParameter | None"]:
    """Caffe-named arrays from a .caffemodel or .npz, plus the caffemodel's layer definitions (if any)."""
    if path.lower().endswith(".npz"):
        return load_npz(path), None
    model = read_caffemodel(path)
    return caffemodel_arrays(model, path), model


# ---------------------------------------------------------------------- PyTorch-style names
def torch_state_dict(arrays: Arrays, definitions: Iterable[pb.LayerParameter], origin: str
                     ) -> "OrderedDict[str, np.ndarray]":
    """Caffe-named arrays renamed (and BatchNorm statistics normalised) as in the module docstring."""
    by_name = {lp.name: lp for lp in definitions}
    state: "OrderedDict[str, np.ndarray]" = OrderedDict()
    owners: dict[str, str] = {}
    for name, blobs in group_by_layer(arrays, origin).items():
        definition = by_name.get(name)
        if definition is None or not definition.type:
            raise WeightsError(f"{origin}: no layer type known for '{name}'; pass the net's prototxt (--net)")
        for key, value in _torch_entries(definition, blobs, origin):
            if key in state:
                if state[key].shape != value.shape or not np.array_equal(state[key], value):
                    raise WeightsError(f"{origin}: layers '{owners[key]}' and '{name}' both give '{key}' but with "
                                       "different values")
                continue
            state[key], owners[key] = value, name
    return state


def _torch_entries(layer: pb.LayerParameter, blobs: list[np.ndarray], origin: str):
    name = layer.name
    if layer.type == "BatchNorm":
        if len(blobs) != 3:
            raise WeightsError(f"{origin}: BatchNorm '{name}' has {len(blobs)} blobs; expected mean, variance, factor")
        factor = float(blobs[2].reshape(-1)[0])
        scale = 0.0 if factor == 0 else 1.0 / factor
        yield f"{name}.running_mean", (blobs[0] * scale).astype(blobs[0].dtype)
        yield f"{name}.running_var", (blobs[1] * scale).astype(blobs[1].dtype)
        return
    for i, blob in enumerate(blobs):
        shared = layer.param[i].name if i < len(layer.param) else ""
        if shared:
            yield shared, blob
        elif layer.type in _WEIGHT_BIAS_TYPES and i < 2:
            yield f"{name}.{('weight', 'bias')[i]}", blob
        else:
            yield f"{name}.blob{i}", blob


def save_torch(path: str, state: "dict[str, np.ndarray]") -> None:
    """``torch.save`` of {name: tensor} (loadable with ``torch.load(path, weights_only=True)``), atomically."""
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: writing .pt needs PyTorch (pip install torch); or write the same "
                           "torch-style names to an .npz") from None
    tensors = OrderedDict((key, torch.from_numpy(np.ascontiguousarray(value))) for key, value in state.items())
    with atomic_output(path) as f:
        torch.save(tensors, f)
