"""Data-parallel training with Caffe 1.0's multi-GPU semantics, one process per rank.

- Every rank runs ``batch_size`` samples of its own shard of the training data (HDF5Data rows
  r, r + K, ...; deterministic given the seed, replayed exactly on resume with the same K).
- The gradients are all-reduced and averaged once per iteration, after the ``iter_size``
  accumulation and before clipping, weight decay and the update, so clipping sees the global
  gradient; every rank applies the same update and the weights stay identical (checked by a
  checksum every ``check_every`` iterations).
- BatchNorm statistics are per rank, as in Caffe; rank 0's are the ones snapshotted.  Only
  rank 0 runs the test nets and writes snapshots; stop/snapshot requests (Ctrl-C, signals) and
  divergence are agreed by all ranks at every iteration, so all stop together.
"""
from __future__ import annotations

import logging

import numpy as np

from ..backend import to_numpy
from ..errors import MemnetError
from .comm import Communicator

log = logging.getLogger(__name__)
REQUEST_CODES = {None: 0, "snapshot": 1, "stop": 2}  # the strongest request of any rank wins


class WeightsDrifted(MemnetError):
    """The ranks' weights differ: the run is no longer data-parallel SGD."""


class DataParallel:
    """The coordinator of one rank's solver (``solver.coordinator``), set up by ``attach``."""

    def __init__(self, comm: Communicator, check_every: int = 1000):
        self.comm = comm
        self.size, self.is_root = comm.size, comm.world.is_root
        self.check_every = int(check_every)

    # ------------------------------------------------------------------ set-up
    def share_seed(self, param) -> None:
        """Give every rank rank 0's ``random_seed`` (drawn there when unset), so that the ranks shuffle
        the training data alike and their shards stay disjoint.  Call before building the solver."""
        seed = int(param.random_seed)
        if seed < 0 and self.is_root:
            seed = int(np.random.default_rng().integers(2**31))
            log.info("Data-parallel training: random_seed %d for every rank", seed)
        param.random_seed = self.comm.comm.bcast(seed, root=0)

    def attach(self, solver) -> None:
        """Shard ``solver``'s training data, share rank 0's weights and state, and coordinate its steps."""
        for layer in solver.net.layers:
            shard = getattr(layer, "shard", None)
            if shard is not None:
                shard(self.comm.rank, self.size)
        if not self.is_root:
            solver.test_nets = []
        solver.coordinator = self
        self.broadcast_state(solver)

    def restore(self, solver, state_file: str) -> None:
        """Resume every rank from a .solverstate that only rank 0 needs to read; each replays its own shard."""
        if self.is_root:
            solver.restore(state_file)
        self.broadcast_state(solver)
        if not self.is_root:
            solver.replay_data(solver.iter)

    def broadcast_state(self, solver) -> None:
        """Give every rank rank 0's weights (all params, BatchNorm statistics included), history and counters."""
        for param in solver.net.learnable_params:
            self.comm.broadcast(param.blob.data)
        for history in solver.history:
            self.comm.broadcast(history)
        counters = np.array([solver.iter, solver.current_step], np.int64)
        self.comm.comm.Bcast(counters, root=0)
        solver.iter, solver.current_step = int(counters[0]), int(counters[1])

    # ------------------------------------------------------------------ the solver's hooks
    def gradients_ready(self, solver) -> None:
        buffer, unpack = _packed_diffs(solver.net)
        self.comm.allreduce_mean(buffer)
        unpack(buffer)

    def any_rank(self, flag: bool) -> bool:
        return bool(self.comm.agree_max([int(bool(flag))])[0])

    def updated(self, solver) -> None:
        if self.check_every and solver.iter % self.check_every == 0:
            self.check_weights(solver)

    def agree(self, request: "str | None") -> "str | None":
        code = self.comm.agree_max([REQUEST_CODES[request]])[0]
        return next(name for name, value in REQUEST_CODES.items() if value == code)

    def check_weights(self, solver) -> None:
        """Raise WeightsDrifted on every rank unless all ranks hold bit-identical learned weights."""
        arrays = [to_numpy(p.blob.data) for p in solver.net.learnable_params if p.lr_mult != 0]
        sums = self.comm.gather_checksums(arrays)
        if len(set(sums)) > 1:
            raise WeightsDrifted(f"iteration {solver.iter}: the ranks' weights differ (CRC-32 per rank: "
                                 f"{', '.join(f'{s:08x}' for s in sums)}); data-parallel training cannot go on")


def _packed_diffs(net):
    """All learnable diffs in one contiguous buffer, and the function that writes a buffer back."""
    diffs = [p.blob.diff for p in net.learnable_params]
    xp = net.layers[0].xp if net.layers else np
    buffer = xp.concatenate([d.ravel() for d in diffs]) if diffs else xp.zeros(0, net.dtype)

    def unpack(flat) -> None:
        offset = 0
        for diff in diffs:
            diff[...] = flat[offset:offset + diff.size].reshape(diff.shape)
            offset += diff.size

    return buffer, unpack
