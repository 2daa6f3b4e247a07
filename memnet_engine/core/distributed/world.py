"""Where this process stands in a data-parallel run: rank, number of ranks, rank on its node.

An MPI launcher (``mpirun -np K``; MPICH/Hydra, Open MPI, Intel MPI, MVAPICH, Slurm's srun with PMI)
tells each process its place through environment variables; we read them without importing MPI,
so a plain ``python tools/train.py`` never loads mpi4py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

# (rank, size, local rank) variables of the launchers we know, first match wins.
LAUNCHER_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),                                     # MPICH / Hydra, Intel MPI
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),                                   # PMIx
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),     # MVAPICH2
)


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` ranks, and its ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def launched_world(environ: "Mapping[str, str] | None" = None) -> World:
    """The World an MPI launcher describes in ``environ`` (a single process when none does)."""
    env = os.environ if environ is None else environ
    for rank_var, size_var, local_var in LAUNCHER_VARIABLES:
        if rank_var in env and size_var in env:
            rank, size = int(env[rank_var]), int(env[size_var])
            local = int(env.get(local_var, rank))
            return World(rank, size, local)
    return World()
