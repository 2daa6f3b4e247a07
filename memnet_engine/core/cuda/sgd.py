"""The solver's device work on a net's flat learnable state: the gradient sum of squares (reduce.cu) and
the fused SGD update (kernels/sgd.cu).  Nothing here reads a device value back to the host."""
from __future__ import annotations

import numpy as np

from ..backend import cupy_module
from .loader import contiguous, launch, scalar
from .reduce import channel_sums


def sum_of_squares_gpu(x, out) -> None:
    """``out[0] = sum(x * x)`` for a 1-D contiguous ``x`` (one deterministic launch)."""
    channel_sums(contiguous(x), (1, 1, x.size), dots=out)


class RunTables:
    """A ParamBuffer's runs as the update kernel reads them (device arrays, made once)."""

    def __init__(self, buffer):
        cp = cupy_module()
        runs = buffer.runs
        self.count = np.int32(len(runs))
        self.run_end = cp.asarray(np.array([r.end for r in runs], np.int32))
        self.lr_mult = cp.asarray(np.array([r.lr_mult for r in runs], buffer.dtype))
        self.decay_mult = cp.asarray(np.array([r.decay_mult for r in runs], buffer.dtype))


def sgd_update_gpu(buffer, tables: RunTables, history, settings, nonfinite) -> None:
    """One launch of the fused update over ``buffer``'s learned parameters (see kernels/sgd.cu);
    ``history`` is laid out like ``buffer.data``, ``nonfinite`` a 1-element device array."""
    dt = buffer.dtype
    s = settings
    launch("sgd", "sgd_update", dt, buffer.learned, buffer.data, buffer.diff, history, tables.count,
           tables.run_end, tables.lr_mult, tables.decay_mult, scalar(s.rate, dt), scalar(s.weight_decay, dt),
           scalar(s.momentum, dt), scalar(s.clip_scale, dt), scalar(s.iter_scale, dt), np.int32(bool(s.l1)),
           nonfinite)
