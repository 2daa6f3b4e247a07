"""Data-parallel training over MPI ranks (mpi4py; NCCL on GPUs): see ``data_parallel``."""
from .data_parallel import DataParallel, WeightsDrifted
from .world import World, launched_world

__all__ = ["DataParallel", "World", "WeightsDrifted", "launched_world"]
