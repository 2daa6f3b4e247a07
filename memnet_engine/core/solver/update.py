"""Caffe's SGD update over a net's flat learnable state (SGDSolver: ClipGradients' scaling, Normalize,
Regularize, ComputeUpdateValue and Blob::Update), in one pass over the learned parameters.

Per learned parameter, in Caffe's order and float rounding (each step rounds, no fused multiply-add):
``g = diff * clip_scale``, ``g = g * iter_scale``, ``g = g + local_decay * (L1 ? sign(w) : w)`` (when
local_decay != 0), ``history = momentum * history + local_rate * g``, ``diff = history``,
``data = data - history``, with ``local_rate = rate * lr_mult`` and ``local_decay = weight_decay *
decay_mult`` of the parameter's run.  Parameters with lr_mult 0 are not touched (Caffe's update
leaves them, their history and, unless a layer wrote it, their diff as they were).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..param_buffer import ParamBuffer

f32 = np.float32


@dataclass(frozen=True)
class UpdateSettings:
    """The scalars of one update, in the parameters' float type."""

    rate: np.floating
    weight_decay: np.floating
    momentum: np.floating
    clip_scale: np.floating     # 1 when the gradients are not clipped
    iter_scale: np.floating     # 1 / iter_size
    l1: bool


class FlatSGD:
    """Caffe's SGD rule over a net's ParamBuffer, with its momentum ``history`` laid out like the buffer."""

    def __init__(self, buffer: ParamBuffer):
        self.buffer = buffer
        self.history = buffer.xp.zeros(buffer.size, buffer.dtype)
        self._tables = None
        if buffer.xp is not np:
            from ..cuda.sgd import RunTables
            self._tables = RunTables(buffer)

    def history_views(self) -> list:
        """Each learnable parameter's history (in learnable-param order), a view of ``history``."""
        return [self.buffer.slot(self.history, k).reshape(shape) for k, shape in enumerate(self.buffer.shapes)]

    def sum_of_squares(self, out) -> None:
        """The squared global L2 norm of the diffs into ``out`` (1 element), left on the device.

        CPU: Caffe's ClipGradients sum, the float sum of each parameter's dot product in order; GPU:
        one reduction over the flat diff.
        """
        buffer = self.buffer
        if self._tables is not None:
            from ..cuda.sgd import sum_of_squares_gpu
            sum_of_squares_gpu(buffer.diff, out)
            return
        sumsq = f32(0)
        for k in range(len(buffer.shapes)):
            diff = buffer.slot(buffer.diff, k)
            sumsq += f32(np.dot(diff, diff))
        out[0] = sumsq

    def apply(self, settings: UpdateSettings, nonfinite) -> None:
        """The update (one fused kernel on the GPU), then zero the frozen diffs when a layer may have
        written them (Caffe's update by zero leaves them zero); sets ``nonfinite[0]`` when a weight
        became non-finite."""
        buffer = self.buffer
        if self._tables is None:
            self._apply_cpu(settings, nonfinite)
        else:
            from ..cuda.sgd import sgd_update_gpu
            sgd_update_gpu(buffer, self._tables, self.history, settings, nonfinite)
        if buffer.frozen_diffs_written and buffer.learned < buffer.size:
            buffer.diff[buffer.learned:].fill(0)

    def _apply_cpu(self, s: UpdateSettings, nonfinite) -> None:
        """NumPy, vectorised per run, in the kernel's order of operations."""
        buffer = self.buffer
        n = buffer.learned
        data, diff, history = buffer.data[:n], buffer.diff[:n], self.history[:n]
        if s.clip_scale != 1:
            diff *= s.clip_scale
        if s.iter_scale != 1:
            diff *= s.iter_scale
        dt = data.dtype.type
        scratch = np.empty_like(diff)
        for run in buffer.runs:
            part = slice(run.start, run.end)
            local_decay = dt(s.weight_decay) * dt(run.decay_mult)
            if local_decay:
                if s.l1:
                    np.sign(data[part], out=scratch[part])
                    scratch[part] *= local_decay
                else:
                    np.multiply(data[part], local_decay, out=scratch[part])
                diff[part] += scratch[part]
        history *= s.momentum
        for run in buffer.runs:
            part = slice(run.start, run.end)
            np.multiply(diff[part], dt(s.rate) * dt(run.lr_mult), out=scratch[part])
            history[part] += scratch[part]
        diff[...] = history
        data -= diff
        if n and not (np.isfinite(data.max()) and np.isfinite(data.min())):
            nonfinite[0] = 1
