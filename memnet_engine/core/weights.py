"""Reading and writing binary Caffe files: .caffemodel (NetParameter) and BlobProto helpers.

Files we write carry a SHA-256 of their contents (``integrity``), checked when read; Caffe's
files, which have none, are read as they are.  Copying weights into a net checks that they are
for that net: no layer in common is an error naming both nets, a partial match is logged, and
NaN or infinite values are reported by a ``NonFiniteWeights`` warning (an error under
``warnings.simplefilter("error", NonFiniteWeights)``, as the CLIs' ``--strict`` does).
"""
from __future__ import annotations

import logging
import math
import os
import stat
import warnings
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError, Message

from .atomic import atomic_output
from .backend import to_numpy
from .blob import Blob
from .errors import NonFiniteWeights, WeightsError
from .integrity import length_delimited, seal, seal_header, unseal
from .memory import human, require
from .proto import caffe_pb2 as pb

if TYPE_CHECKING:
    from .net import Net


def blob_proto_shape(proto: pb.BlobProto) -> tuple[int, ...]:
    """The shape a BlobProto declares (``shape``, else the legacy 4-D fields)."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.double_data) or len(proto.data),)


log = logging.getLogger(__name__)
FLOAT_DATA, FLOAT_DIFF, DOUBLE_DATA = 5, 6, 8  # BlobProto field numbers (packed repeated)
READ_COPIES = 3  # a file is held as bytes, as parsed messages and as arrays while it is read


def _legacy_4d(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) * (4 - len(shape)) + shape if len(shape) <= 4 else shape


def blob_proto_fits(proto: pb.BlobProto, shape: tuple[int, ...]) -> bool:
    """Caffe's ShapeEquals: legacy 4-D protos match a blob of <= 4 axes padded with leading 1s."""
    if proto.HasField("shape"):
        return blob_proto_shape(proto) == shape
    return blob_proto_shape(proto) == _legacy_4d(shape)


def blob_proto_array(proto: pb.BlobProto, what: str = "data") -> np.ndarray:
    """The values of a BlobProto's ``data`` (or ``diff``), float or double, in its declared shape."""
    doubles = proto.double_data if what == "data" else proto.double_diff
    floats = proto.data if what == "data" else proto.diff
    values = np.asarray(doubles, np.float64) if len(doubles) else np.asarray(floats, np.float32)
    shape = blob_proto_shape(proto)
    if any(d < 0 for d in shape) or values.size != math.prod(shape):
        raise WeightsError(f"blob of shape {shape} holds {values.size} {what} values")
    return values.reshape(shape)


def set_packed(proto: pb.BlobProto, field: int, array: np.ndarray) -> None:
    """Append ``array`` to a packed float (or double) field of ``proto`` as raw bytes: protobuf parses
    them in C, without the Python list of floats that ``extend`` would need."""
    raw = np.ascontiguousarray(array, dtype="<f8" if field == DOUBLE_DATA else "<f4").tobytes()
    proto.MergeFromString(length_delimited(field, raw))


def array_to_blob_proto(array, proto: pb.BlobProto | None = None) -> pb.BlobProto:
    """A BlobProto holding ``array`` as float data with a ``shape``."""
    proto = pb.BlobProto() if proto is None else proto
    host = to_numpy(array)
    proto.shape.dim.extend(int(d) for d in host.shape)
    set_packed(proto, FLOAT_DATA, host)
    return proto


def read_binary(path: str, message: Message, what: str) -> Message:
    """Parse a binary protobuf file (checking the digest of one we wrote), turning I/O, size and decode
    failures into a WeightsError."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise WeightsError(f"{path}: not a regular file; a {what} must be one")
            require(READ_COPIES * info.st_size, f"reading {path} ({human(info.st_size)})", error=WeightsError)
            raw = f.read()
    except (OSError, ValueError) as ex:  # ValueError: a NUL byte in the name (a file name read from a damaged file)
        raise WeightsError(f"{path}: cannot read {what}: {getattr(ex, 'strerror', None) or ex}") from None
    found = unseal(raw)
    if not found.intact:
        raise WeightsError(f"{path}: checksum mismatch: this {what} was written by memnet-engine with a SHA-256 of "
                           "its contents, and they changed since (a flipped bit or a truncated copy); use another "
                           "copy or an earlier snapshot")
    try:
        message.ParseFromString(found.body)
    except (DecodeError, RuntimeError, ValueError) as ex:
        raise WeightsError(f"{path}: truncated or corrupt {what} ({len(raw)} bytes): {ex}") from None
    return message


def sealed_bytes(message: Message, paired: bytes = b"") -> bytes:
    """``message`` serialised with its SHA-256 (see ``integrity``)."""
    return seal(message.SerializeToString(), paired)


def write_binary_atomic(path: str, message: Message) -> None:
    """Serialise ``message`` (with its SHA-256) to ``path`` through a temporary file and an atomic rename."""
    body = message.SerializeToString()
    with atomic_output(path) as f:
        f.write(seal_header(body))
        f.write(body)


def read_caffemodel(path: str) -> pb.NetParameter:
    param = read_binary(path, pb.NetParameter(), ".caffemodel")
    if len(param.layers) and not len(param.layer):
        raise WeightsError(f"{path}: a V1-format caffemodel ('layers'); upgrade it with Caffe's "
                           "upgrade_net_proto_binary first")
    if not len(param.layer):
        raise WeightsError(f"{path}: holds no layers; is it a .caffemodel?")
    return param


def copy_weights(net: "Net", source: pb.NetParameter, origin: str = "<NetParameter>") -> list[str]:
    """Copy blobs from ``source`` into ``net``'s layers of the same name; returns names copied.

    Source layers the net does not have are ignored (as Caffe does), but a file sharing no layer
    with the net is an error naming both nets, and net layers left unfilled are logged.  A blob count
    or shape mismatch is an error naming the layer.  Nothing is written unless every layer fits.
    NaN or infinite values give a NonFiniteWeights warning naming the layers.
    """
    staged: list[tuple[str, Blob, np.ndarray]] = []
    copied = []
    _check_common_layers(net, source, origin)
    for src in source.layer:
        layer = net.layer_dict.get(src.name)
        if layer is None or (not src.blobs and not layer.blobs):
            continue
        if len(src.blobs) != len(layer.blobs):
            raise WeightsError(f"{origin}: layer '{src.name}' has {len(src.blobs)} blobs, the net's layer "
                               f"has {len(layer.blobs)}")
        for i, (proto, blob) in enumerate(zip(src.blobs, layer.blobs)):
            if not blob_proto_fits(proto, blob.shape):
                raise WeightsError(f"{origin}: cannot copy param {i} of layer '{src.name}': shape mismatch "
                                   f"(file {blob_proto_shape(proto)}, net {blob.shape})")
            staged.append((src.name, blob, blob_proto_array(proto).reshape(blob.shape)))
        copied.append(src.name)
    bad = list(dict.fromkeys(name for name, _, values in staged if not np.isfinite(values).all()))
    if bad:
        warnings.warn(NonFiniteWeights(f"{origin}: NaN or infinite weights in layer(s) {_some(bad)}"), stacklevel=3)
    for _, blob, values in staged:
        blob.data[...] = blob.xp.asarray(values, dtype=blob.dtype)
    missing = unfilled_layers(net, copied)
    if missing:
        log.info("Copied %d blobs of %d layers from %s; %d layers of net '%s' are not in it and keep their "
                 "initial values: %s", len(staged), len(copied), origin, len(missing), net.name, _some(missing))
    return copied


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def _check_common_layers(net: "Net", source: pb.NetParameter, origin: str) -> None:
    """Weights of another net (no layer name in common) are an error naming both nets."""
    wanted = [layer.name for layer in net.layers if layer.blobs]
    found = {layer.name for layer in source.layer if layer.blobs}
    if wanted and not found.intersection(wanted):
        raise WeightsError(f"{origin} (net '{source.name or '?'}', {len(found)} layers with weights) has no layer of "
                           f"net '{net.name}' (whose layers with weights are {_some(wanted, 3)}): weights of another "
                           "net?")


def unfilled_layers(net: "Net", copied: "list[str]") -> list[str]:
    """The net's layers with parameters that ``copied`` (from copy_weights) does not name."""
    done = set(copied)
    return [layer.name for layer in net.layers if layer.blobs and layer.name not in done]


def require_all_filled(net: "Net", copied: "list[str]", origin: str) -> None:
    """A WeightsError naming the layers with parameters that ``copied`` (from copy_weights of ``origin``) left out."""
    missing = unfilled_layers(net, copied)
    if missing:
        raise WeightsError(f"{origin} has no weights for {len(missing)} layer(s) of net '{net.name}': "
                           f"{_some(missing)}; is it the right model for this net?")


def copy_weights_from_file(net: "Net", path: str, require_all: bool = False) -> list[str]:
    """copy_weights from a .caffemodel; with ``require_all`` every layer with parameters must be filled."""
    copied = copy_weights(net, read_caffemodel(path), path)
    if require_all:
        require_all_filled(net, copied, path)
    return copied


def net_to_proto(net: "Net", write_diff: bool = False) -> pb.NetParameter:
    """The net as Caffe's Net::ToProto writes it: every layer's parameter plus its blobs."""
    param = pb.NetParameter(name=net.name)
    for layer in net.layers:
        lp = param.layer.add()
        lp.CopyFrom(layer.param)
        del lp.blobs[:]
        for blob in layer.blobs:
            bp = array_to_blob_proto(blob.data, lp.blobs.add())
            if write_diff:
                set_packed(bp, FLOAT_DIFF, to_numpy(blob.diff))
    return param


def save_weights(net: "Net", path: str) -> None:
    write_binary_atomic(path, net_to_proto(net))
