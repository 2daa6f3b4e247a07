"""Solver snapshots as Caffe writes them: ``{prefix}_iter_{N}.caffemodel`` and ``.solverstate``.

The ``.solverstate`` is a binary SolverState: ``iter``, ``learned_net`` (the caffemodel's name as
written), ``current_step`` and the momentum ``history`` of every learnable parameter, in
learnable-param order, each a BlobProto with ``shape`` and float ``data`` — byte for byte the
layout of Caffe's SGDSolver::SnapshotSolverStateToBinaryProto, so either side reads the other's.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import WeightsError
from ..proto import caffe_pb2 as pb
from ..weights import array_to_blob_proto, blob_proto_array, blob_proto_fits, blob_proto_shape, read_binary, \
    write_binary_atomic


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's Solver::SnapshotFilename: ``{prefix}_iter_{iteration}{extension}``."""
    return f"{prefix}_iter_{iteration}{extension}"


def write_solver_state(path: str, iteration: int, learned_net: str, current_step: int, history: Sequence) -> None:
    """Write a SolverState (atomically) holding ``history`` (NumPy or CuPy arrays) in order."""
    state = pb.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    for array in history:
        array_to_blob_proto(array, state.history.add())
    write_binary_atomic(path, state)


def read_solver_state(path: str) -> pb.SolverState:
    if path.endswith(".h5"):
        raise WeightsError(f"{path}: HDF5 solver states are not supported; snapshot with "
                           "snapshot_format: BINARYPROTO (Caffe's default)")
    return read_binary(path, pb.SolverState(), ".solverstate")


def history_arrays(state: pb.SolverState, shapes: Sequence[tuple[int, ...]], origin: str,
                   names: Sequence[str] = ()) -> list[np.ndarray]:
    """The history blobs of ``state`` as arrays of ``shapes``; a count or shape mismatch is an error."""
    if len(state.history) != len(shapes):
        raise WeightsError(f"{origin}: holds {len(state.history)} history blobs but the net has {len(shapes)} "
                           "learnable parameters (was it written for another net?)")
    arrays = []
    for i, (proto, shape) in enumerate(zip(state.history, shapes)):
        if not blob_proto_fits(proto, shape):
            owner = f" (layer '{names[i]}')" if i < len(names) else ""
            raise WeightsError(f"{origin}: history blob {i}{owner} has shape {blob_proto_shape(proto)}, the "
                               f"parameter has shape {shape}")
        arrays.append(blob_proto_array(proto).reshape(shape))
    return arrays


def locate_learned_net(learned_net: str, state_path: str) -> str:
    """Find the caffemodel a solverstate names: as written, else next to the solverstate."""
    folder = os.path.dirname(os.path.abspath(state_path))
    candidates = (learned_net, os.path.join(folder, learned_net), os.path.join(folder, os.path.basename(learned_net)))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise WeightsError(f"{state_path}: its weights file '{learned_net}' was not found (looked in the working "
                       f"directory and in {folder})")
