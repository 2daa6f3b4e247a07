"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), to the float32 value Caffe computes.

Caffe holds the solver settings as ``float`` and the iteration as ``int``: ``pow(float, int)``
is evaluated in double (C++11 promotion) and rounded once to float, while ``inv``, ``poly`` and
``sigmoid`` use float arithmetic with ``powf`` / ``expf``.  The helpers below follow the same
mix (float64 ``pow``/``exp`` rounded once to float32 equal the correctly rounded float results).
"""
from __future__ import annotations

import numpy as np

from .errors import MemnetError
from .proto import caffe_pb2 as pb

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

f32 = np.float32


def _pow(base: float, exponent: float) -> float:
    """C's double ``pow`` (inf on overflow instead of Python's OverflowError)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return float(np.power(np.float64(base), np.float64(exponent)))


def _expf(x: np.float32) -> np.float32:
    with np.errstate(over="ignore"):
        return f32(np.exp(np.float64(x)))


def check_policy(param: pb.SolverParameter) -> None:
    """Raise a clear error for a policy Caffe would reject (at its first use) or does not know."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise MemnetError(f"unknown lr_policy {policy!r} (Caffe knows: {', '.join(POLICIES)})")
    if policy == "step" and param.stepsize <= 0:
        raise MemnetError("lr_policy 'step' needs stepsize > 0")
    if policy in ("step", "exp", "inv", "multistep") and param.gamma < 0:
        raise MemnetError(f"lr_policy {policy!r} needs gamma >= 0")
    if policy == "poly" and param.max_iter <= 0:
        raise MemnetError("lr_policy 'poly' needs max_iter > 0")


def learning_rate(param: pb.SolverParameter, iteration: int, current_step: int) -> tuple[np.float32, int]:
    """The rate for ``iteration`` and the updated ``current_step`` (step and multistep advance it)."""
    policy = param.lr_policy
    base_lr, gamma, power = f32(param.base_lr), f32(param.gamma), f32(param.power)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = f32(float(base_lr) * _pow(gamma, current_step))
    elif policy == "exp":
        rate = f32(float(base_lr) * _pow(gamma, iteration))
    elif policy == "inv":
        rate = base_lr * f32(_pow(f32(1) + gamma * f32(iteration), -power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = f32(float(base_lr) * _pow(gamma, current_step))
    elif policy == "poly":
        rate = base_lr * f32(_pow(f32(1) - f32(iteration) / f32(param.max_iter), power))
    elif policy == "sigmoid":
        rate = base_lr * (f32(1) / (f32(1) + _expf(-gamma * (f32(iteration) - f32(param.stepsize)))))
    else:
        raise MemnetError(f"unknown lr_policy {policy!r} (Caffe knows: {', '.join(POLICIES)})")
    return f32(rate), current_step
