"""Caffe's solver, split as Caffe splits it: the generic loop (``solver``), the SGD rule and its state
(``sgd_solver``, ``update``, ``state``), solver files (``settings``) and signal handling (``signals``)."""
from .settings import read_solver
from .sgd_solver import SGDSolver
from .solver import IterationStats, Solver, TrainingDiverged

__all__ = ["IterationStats", "SGDSolver", "Solver", "TrainingDiverged", "read_solver"]
