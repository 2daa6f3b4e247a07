"""Reading and writing binary Caffe files: .caffemodel (NetParameter) and BlobProto helpers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError, Message

from .atomic import atomic_output
from .backend import to_numpy
from .blob import Blob
from .errors import WeightsError
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
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise WeightsError(f"blob of shape {shape} holds {values.size} {what} values")
    return values.reshape(shape)


def array_to_blob_proto(array, proto: pb.BlobProto | None = None) -> pb.BlobProto:
    """A BlobProto holding ``array`` as float data with a ``shape``."""
    proto = pb.BlobProto() if proto is None else proto
    host = to_numpy(array)
    proto.shape.dim.extend(int(d) for d in host.shape)
    proto.data.extend(host.astype(np.float32, copy=False).ravel().tolist())
    return proto


def read_binary(path: str, message: Message, what: str) -> Message:
    """Parse a binary protobuf file, turning I/O and decode failures into a WeightsError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as ex:
        raise WeightsError(f"{path}: cannot read {what}: {ex.strerror}") from None
    try:
        message.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as ex:
        raise WeightsError(f"{path}: truncated or corrupt {what} ({len(raw)} bytes): {ex}") from None
    return message


def write_binary_atomic(path: str, message: Message) -> None:
    """Serialise ``message`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_output(path) as f:
        f.write(message.SerializeToString())


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

    Source layers the net does not have are ignored (as Caffe does); a blob count or shape
    mismatch is an error naming the layer.  Nothing is written unless every layer fits.
    """
    staged: list[tuple[Blob, np.ndarray]] = []
    copied = []
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
            staged.append((blob, blob_proto_array(proto).reshape(blob.shape)))
        copied.append(src.name)
    for blob, values in staged:
        blob.data[...] = blob.xp.asarray(values, dtype=blob.dtype)
    return copied


def copy_weights_from_file(net: "Net", path: str) -> list[str]:
    return copy_weights(net, read_caffemodel(path), path)


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
                bp.diff.extend(to_numpy(blob.diff).astype(np.float32).ravel().tolist())
    return param


def save_weights(net: "Net", path: str) -> None:
    write_binary_atomic(path, net_to_proto(net))
