"""Our caffe.proto: the committed caffe_pb2.py matches it, and it is wire-compatible with BVLC Caffe."""
import re

import pytest
from google.protobuf.descriptor import FieldDescriptor

from memnet_engine.core.proto import caffe_pb2 as pb
from conftest import GOLDEN_FIXTURES, REPO

PROTO = REPO / "memnet_engine" / "core" / "proto" / "caffe.proto"
FIELD = re.compile(r"^\s*(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)")


def proto_fields() -> dict[tuple[str, str], int]:
    """(message, field) -> number, read from caffe.proto's text (top-level messages)."""
    fields, message, depth = {}, None, 0
    for line in PROTO.read_text().splitlines():
        line = line.split("//")[0]
        opening = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if opening and depth == 0:
            message = opening.group(1)
        match = FIELD.match(line)
        if match and depth == 1:
            fields[(message, match.group(3))] = int(match.group(4))
        depth += line.count("{") - line.count("}")
    return fields


def test_generated_module_matches_the_proto_file():
    declared = proto_fields()
    generated = {(m.name, f.name): f.number for m in pb.DESCRIPTOR.message_types_by_name.values() for f in m.fields}
    assert declared == generated, "caffe_pb2.py is stale: run tools/gen_proto.py"


@pytest.mark.parametrize("message, field, number", [
    ("BlobProto", "shape", 7), ("BlobProto", "data", 5), ("BlobProto", "num", 1), ("BlobShape", "dim", 1),
    ("NetParameter", "layer", 100), ("NetParameter", "input_dim", 4), ("NetParameter", "force_backward", 5),
    ("LayerParameter", "param", 6), ("LayerParameter", "blobs", 7), ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "convolution_param", 106), ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "scale_param", 142), ("LayerParameter", "input_param", 143),
    ("LayerParameter", "hdf5_data_param", 112), ("LayerParameter", "eltwise_param", 110),
    ("ParamSpec", "lr_mult", 3), ("ConvolutionParameter", "dilation", 18), ("SolverParameter", "clip_gradients", 35),
    ("SolverParameter", "iter_size", 36), ("SolverState", "history", 3), ("SolverState", "current_step", 4),
])
def test_bvlc_field_numbers(message, field, number):
    assert pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_blob_values_are_packed_floats():
    data = pb.BlobProto.DESCRIPTOR.fields_by_name["data"]
    assert data.type == FieldDescriptor.TYPE_FLOAT and data.GetOptions().packed


@pytest.mark.parametrize("name", ["memnet_m2r2_c8_iter_4.caffemodel", "memnet_m2r2_c8_iter_4.solverstate",
                                  "conv_stride_group_dilation.caffemodel", "bn_test.caffemodel"])
def test_files_written_by_caffe_round_trip_byte_for_byte(name):
    raw = (GOLDEN_FIXTURES / name).read_bytes()
    message = pb.SolverState() if name.endswith(".solverstate") else pb.NetParameter()
    message.ParseFromString(raw)
    message.DiscardUnknownFields()  # every field Caffe wrote must be one we declare
    assert message.SerializeToString() == raw
