"""Solver files: reading a solver .prototxt as Caffe does, checking it, and building its nets."""
from __future__ import annotations

import os

from ..errors import MemnetError
from ..layers.hdf5_data import resolve
from ..lr_policy import check_policy
from ..net import Net
from ..proto import caffe_pb2 as pb
from ..prototxt import read_net_param, read_solver_param

SOLVER_TYPES = {pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
                pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
                pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam"}


def read_solver(path: "str | os.PathLike") -> pb.SolverParameter:
    """Read a solver .prototxt with Caffe's upgrades, resolving net paths against its folder.

    ``net`` / ``train_net`` / ``test_net`` are used as given when they exist from the working
    directory (Caffe's rule), else relative to the solver file's folder.  A missing
    ``snapshot_prefix`` becomes the solver path without extension; a directory becomes
    ``dir/<solver stem>`` (Caffe's UpgradeSnapshotPrefixProperty).
    """
    path = os.fspath(path)
    param = read_solver_param(path)
    folder = os.path.dirname(os.path.abspath(path))
    if param.HasField("solver_type"):
        if param.HasField("type") and param.type != SOLVER_TYPES[param.solver_type]:
            raise MemnetError(f"{path}: solver_type and type disagree; give only type")
        param.type = SOLVER_TYPES[param.solver_type]
        param.ClearField("solver_type")
    for field in ("net", "train_net"):
        if param.HasField(field):
            setattr(param, field, resolve(getattr(param, field), folder))
    resolved = [resolve(p, folder) for p in param.test_net]
    del param.test_net[:]
    param.test_net.extend(resolved)
    stem = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
    return param


def check_settings(param: pb.SolverParameter) -> None:
    if param.type != "SGD":
        raise MemnetError(f"solver type {param.type!r} is not supported: memnet-engine implements SGD (the solver "
                          "MemNet was trained with)")
    if param.average_loss < 1:
        raise MemnetError("average_loss must be at least 1")
    if param.iter_size < 1:
        raise MemnetError("iter_size must be at least 1")
    if param.regularization_type not in ("L1", "L2"):
        raise MemnetError(f"unknown regularization_type {param.regularization_type!r}: use L2 or L1")
    if param.snapshot_format != pb.SolverParameter.BINARYPROTO:
        raise MemnetError("snapshot_format HDF5 is not supported; use BINARYPROTO (Caffe's default)")
    check_policy(param)


def net_sources(param: pb.SolverParameter) -> list[str]:
    return [f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)]


def build_net(source: "str | pb.NetParameter", phase: int, override: "pb.NetState | None", device: str,
              math: str = "strict") -> Net:
    """A Net whose NetState merges, as Caffe does: phase < the net's own ``state`` < ``override``."""
    own = read_net_param(source).state
    state = pb.NetState(phase=phase)
    state.MergeFrom(own)
    if override is not None:
        state.MergeFrom(override)
    return Net(source, phase=state.phase, level=state.level, stages=list(state.stage), device=device, math=math)
