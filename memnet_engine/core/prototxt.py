"""Reading Caffe text-format files (nets and solvers) with errors that name file, line and column."""
from __future__ import annotations

import os
import re
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from .errors import PrototxtError
from .proto import caffe_pb2 as pb

M = TypeVar("M", bound=Message)


def parse_text(text: str, message: M, source: str = "<string>") -> M:
    """Parse protobuf text ``text`` into ``message``; errors read 'source:line:col: what'."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as ex:
        line, col = ex.GetLine(), ex.GetColumn()
        what = str(ex)
        what = re.sub(r"^\d+:\d+ : ", "", what)
        where = f"{source}:{line}:{col}" if line else source
        raise PrototxtError(f"{where}: {what}") from None
    return message


def read_text_file(path: str, message: M) -> M:
    """Read a text-format protobuf file into ``message``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError) as ex:  # ValueError: a NUL byte in the name (a file name read from a damaged file)
        raise PrototxtError(f"{path}: cannot read: {getattr(ex, 'strerror', None) or ex}") from None
    except UnicodeDecodeError:
        raise PrototxtError(f"{path}: not a text .prototxt (is it a binary .caffemodel?)") from None
    return parse_text(text, message, path)


def read_net_param(path_or_param: "str | os.PathLike | pb.NetParameter") -> pb.NetParameter:
    """A NetParameter from a .prototxt path (or a copy of one given)."""
    if isinstance(path_or_param, pb.NetParameter):
        param = pb.NetParameter()
        param.CopyFrom(path_or_param)
        source = "<NetParameter>"
    else:
        source = os.fspath(path_or_param)
        param = read_text_file(source, pb.NetParameter())
    if len(param.layers):
        raise PrototxtError(f"{source}: uses the pre-2015 V1 'layers {{ }}' format, which memnet-engine does not "
                            "read; upgrade it with Caffe's tools/upgrade_net_proto_text first")
    return param


def read_solver_param(path: "str | os.PathLike") -> pb.SolverParameter:
    return read_text_file(os.fspath(path), pb.SolverParameter())


def to_text(message: Message) -> str:
    return text_format.MessageToString(message)
