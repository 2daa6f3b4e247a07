"""The SGD update rule of one parameter (SGDSolver's Normalize, Regularize, ComputeUpdateValue, Update)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..backend import GPU


def sgd_update_cpu(data: np.ndarray, diff: np.ndarray, history: np.ndarray, *, local_rate, local_decay, momentum,
                   l1: bool, scale) -> None:
    """SGDSolver's Normalize + Regularize + ComputeUpdateValue + Blob::Update for one parameter, in place."""
    if scale != 1:
        diff *= scale
    if local_decay:
        diff += local_decay * (np.sign(data) if l1 else data)
    history *= momentum
    history += local_rate * diff
    diff[...] = history
    data -= diff


def sgd_update(device: str) -> Callable:
    """The update function for parameters on ``device`` (the GPU one is a fused kernel)."""
    if device == GPU:
        from ..cuda.sgd import sgd_update_gpu
        return sgd_update_gpu
    return sgd_update_cpu
