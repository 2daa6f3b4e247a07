"""prototxt/ as the real Caffe and the original release's MATLAB test scripts read it.

BVLC Caffe parses text files with a schema that has none of memnet-engine's own fields and refuses
unknown fields; the release's ``do_cnn.m`` rewrites lines 4-6 of a deploy file with ``input_dim`` values.
"""
from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from memnet_engine import TEST, Net
from memnet_engine.core.proto import caffe_pb2 as pb

from conftest import REPO

PROTOTXT = sorted((REPO / "prototxt").glob("*.prototxt"))
ENGINE_FIELDS_FROM = 1000  # caffe.proto: memnet-engine's own fields are numbered from here on
ENGINE_FIELDS = ["SolverParameter.adjustable_clip"]


def without_engine_fields(messages, prefix: str = "") -> list[str]:
    """Remove memnet-engine's fields from ``messages`` (DescriptorProtos, nested ones too); their names."""
    removed = []
    for message in messages:
        for field in [f for f in message.field if f.number >= ENGINE_FIELDS_FROM]:
            removed.append(f"{prefix}{message.name}.{field.name}")
            message.field.remove(field)
        removed += without_engine_fields(message.nested_type, f"{prefix}{message.name}.")
    return removed


@pytest.fixture(scope="module")
def stock_caffe() -> dict:
    """NetParameter / SolverParameter classes of our caffe.proto minus memnet-engine's fields: BVLC Caffe's
    schema (every other field has Caffe's name, number, type and default: see caffe.proto's header)."""
    schema = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(schema)
    assert without_engine_fields(schema.message_type) == ENGINE_FIELDS
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in ("NetParameter", "SolverParameter")}


@pytest.mark.parametrize("path", PROTOTXT, ids=[p.name for p in PROTOTXT])
def test_committed_files_parse_with_caffes_schema(stock_caffe, path):
    kind = "SolverParameter" if "solver" in path.name else "NetParameter"
    message = text_format.Parse(path.read_text(encoding="utf-8"), stock_caffe[kind]())
    assert message.ListFields()


def test_the_stock_schema_rejects_our_field_as_caffe_does(stock_caffe):
    with pytest.raises(text_format.ParseError, match="has no field named \"adjustable_clip\""):
        text_format.Parse('base_lr: 0.1 clip_gradients: 0.01 adjustable_clip: true', stock_caffe["SolverParameter"]())


@pytest.mark.parametrize("path", [p for p in PROTOTXT if p.name.endswith("_deploy.prototxt")],
                         ids=lambda p: p.name)
def test_deploy_files_work_with_the_releases_do_cnn(tmp_path, path):
    """Lines 1-6 are name, input and the four input_dim; do_cnn.m writes channels, height, width to lines 4-6."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("name: ") and lines[1] == 'input: "data"\n'
    assert lines[2:6] == ["input_dim: 1\n", "input_dim: 1\n", "input_dim: 144\n", "input_dim: 144\n"]
    lines[3:6] = ["input_dim: 1\n", "input_dim: 37\n", "input_dim: 29\n"]
    rewritten = tmp_path / path.name
    rewritten.write_text("".join(lines), encoding="utf-8")
    net = Net(str(rewritten), phase=TEST)
    assert net.blobs["data"].shape == (1, 1, 37, 29) and net.blobs["HR_recovery"].shape == (1, 1, 37, 29)
