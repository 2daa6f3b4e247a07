"""Collectives for data-parallel training: MPI (mpi4py) on the CPU, NCCL (CuPy) on GPUs.

MPI launches the ranks and carries the control plane (agreement on stop requests, checksums,
NCCL's unique id); the gradient all-reduce runs on MPI's ``Allreduce`` for host arrays and on
NCCL's ``ncclAllReduce`` for device arrays, on the current CUDA stream (no host sync).
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from ..errors import MemnetError
from .world import World


def mpi_module():
    """mpi4py's MPI, or a clear error naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as ex:
        raise MemnetError("distributed training needs mpi4py and an MPI library: pip install "
                          "'memnet-engine[mpi]' (mpi4py + MPICH wheels), then launch with mpirun -np K") from ex
    return MPI


class Communicator:
    """All ranks of COMM_WORLD.  ``allreduce_mean`` works on host (MPI) or device (NCCL) arrays."""

    def __init__(self, world: World, device: str = "cpu"):
        self.MPI = mpi_module()
        self.comm = self.MPI.COMM_WORLD
        if (self.comm.Get_rank(), self.comm.Get_size()) != (world.rank, world.size):
            raise MemnetError(f"MPI reports rank {self.comm.Get_rank()} of {self.comm.Get_size()}, the launcher's "
                              f"environment rank {world.rank} of {world.size}: was mpi4py built for another MPI?")
        self.world = world
        self.nccl = _NcclRing(self.comm, world) if device.startswith("gpu") else None

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    def allreduce_mean(self, buffer) -> None:
        """Replace ``buffer`` (contiguous) by the mean of every rank's ``buffer``: a sum, then * (1/size)."""
        if self.nccl is not None:
            self.nccl.allreduce_sum(buffer)
        else:
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        buffer *= buffer.dtype.type(1.0 / self.size)

    def broadcast(self, buffer, root: int = 0) -> None:
        """Copy ``root``'s ``buffer`` into every rank's."""
        if self.nccl is not None:
            self.nccl.broadcast(buffer, root)
        else:
            self.comm.Bcast(buffer, root=root)

    def agree_max(self, values: Sequence[int]) -> list[int]:
        """Element-wise maximum over ranks of small integer flags (host round trip)."""
        array = np.asarray(values, np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.MAX)
        return [int(v) for v in array]

    def gather_checksums(self, host_bytes: Sequence[np.ndarray]) -> list[int]:
        """Every rank's CRC-32 of the given host arrays, in rank order."""
        crc = 0
        for array in host_bytes:
            crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)
        return self.comm.allgather(crc)

    def abort(self, code: int = 1) -> None:
        """End every rank now (after an error on this one)."""
        self.comm.Abort(code)


class _NcclRing:
    """One NCCL communicator over the ranks' GPUs; the unique id travels over MPI."""

    def __init__(self, mpi_comm, world: World):
        from cupy.cuda import nccl

        self.nccl = nccl
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _args(self, buffer):
        import cupy

        if not buffer.flags.c_contiguous:
            raise ValueError("NCCL collectives need a contiguous buffer")
        return buffer.data.ptr, buffer.size, self.types[np.dtype(buffer.dtype)], cupy.cuda.get_current_stream().ptr

    def allreduce_sum(self, buffer) -> None:
        ptr, count, dtype, stream = self._args(buffer)
        self.comm.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast(self, buffer, root: int) -> None:
        ptr, count, dtype, stream = self._args(buffer)
        self.comm.broadcast(ptr, ptr, count, dtype, root, stream)
