"""Solver snapshots as Caffe writes them: ``{prefix}_iter_{N}.caffemodel`` and ``.solverstate``.

The ``.solverstate`` is a binary SolverState: ``iter``, ``learned_net`` (the caffemodel's name as
written), ``current_step`` and the momentum ``history`` of every learnable parameter, in
learnable-param order, each a BlobProto with ``shape`` and float ``data`` — byte for byte the
layout of Caffe's SGDSolver::SnapshotSolverStateToBinaryProto, so either side reads the other's.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import NonFiniteWeights, WeightsError
from ..integrity import peek_seal
from ..proto import caffe_pb2 as pb
from ..weights import array_to_blob_proto, blob_proto_array, blob_proto_fits, blob_proto_shape, \
    copy_weights_from_file, read_binary, write_binary_atomic

if TYPE_CHECKING:
    from ..net import Net


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's Solver::SnapshotFilename: ``{prefix}_iter_{iteration}{extension}``."""
    return f"{prefix}_iter_{iteration}{extension}"


def solver_state_message(iteration: int, learned_net: str, current_step: int, history: Sequence) -> pb.SolverState:
    """A SolverState holding ``history`` (NumPy or CuPy arrays) in order."""
    state = pb.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    for array in history:
        array_to_blob_proto(array, state.history.add())
    return state


def write_solver_state(path: str, iteration: int, learned_net: str, current_step: int, history: Sequence) -> None:
    """Write a SolverState (atomically) holding ``history`` in order."""
    write_binary_atomic(path, solver_state_message(iteration, learned_net, current_step, history))


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
    bad = [names[i] if i < len(names) else f"#{i}" for i, a in enumerate(arrays) if not np.isfinite(a).all()]
    if bad:
        warnings.warn(NonFiniteWeights(f"{origin}: NaN or infinite momentum history for the parameters of layer(s) "
                                       f"{', '.join(dict.fromkeys(bad))}"), stacklevel=3)
    return arrays


def check_progress(state: pb.SolverState, path: str, max_iter: int) -> None:
    """A solverstate's counters must be ones a run of this solver can have reached (they decide how much
    data is replayed): 0 <= iter <= max_iter, current_step >= 0."""
    if state.iter < 0 or state.current_step < 0:
        raise WeightsError(f"{path}: negative iteration ({state.iter}) or lr step ({state.current_step}): a corrupt "
                           "solverstate")
    if state.iter > max_iter:
        raise WeightsError(f"{path}: is at iteration {state.iter}, past the solver's max_iter {max_iter}: nothing to "
                           "train (raise max_iter to go on)")


def load_learned_net(net: "Net", state: pb.SolverState, path: str) -> None:
    """Copy into ``net`` the caffemodel a solverstate names; every layer with parameters must be in it, and
    a solverstate we wrote must find the very caffemodel it was written with."""
    model = locate_learned_net(state.learned_net, path)
    state_seal, model_seal = peek_seal(path), peek_seal(model)
    if state_seal and state_seal.paired and model_seal and model_seal.digest != state_seal.paired:
        raise WeightsError(f"{path} was written with another {model} (its SHA-256 differs): the caffemodel was "
                           "replaced since, by another run or a copy; resume from a whole pair")
    copy_weights_from_file(net, model, require_all=True)


def locate_learned_net(learned_net: "str | bytes", state_path: str) -> str:
    """Find the caffemodel a solverstate names: as written, else next to the solverstate."""
    if not isinstance(learned_net, str):  # protobuf hands out a name that is not UTF-8 as bytes
        raise WeightsError(f"{state_path}: its weights file name {learned_net!r} is not UTF-8 text: a corrupt "
                           "solverstate")
    folder = os.path.dirname(os.path.abspath(state_path))
    candidates = (learned_net, os.path.join(folder, learned_net), os.path.join(folder, os.path.basename(learned_net)))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise WeightsError(f"{state_path}: its weights file '{learned_net}' was not found (looked in the working "
                       f"directory and in {folder})")
