"""Flat learnable state: all learnable parameters of a net in one data array and one diff array.

Each learnable parameter owns a slot ``[offset, offset + count)``; its blob's ``data``/``diff``
are views of that slot (``Blob.bind``), so a named shared parameter, having one slot, shares data
AND diff, and a permissively shared blob of another shape views the same slot reshaped.  Clearing
every diff is one memset, and an optimiser can treat the net's state as three arrays (data, diff,
its own history laid out like ``data``).

Slots are laid out in *runs* of equal (lr_mult, decay_mult), learned runs first (first use
order), then the parameters with lr_mult 0 (BatchNorm's statistics): an update over
``[0, learned)`` with one multiplier pair per run never touches the frozen ones.  The multipliers
are read when the net is built.  The diff array is allocated when a diff is first used, so nets
that never run backward do not hold one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .backend import array_module

if TYPE_CHECKING:
    from .layer import Layer
    from .net import LearnableParam


@dataclass(frozen=True)
class Run:
    """Consecutive slots ``[start, end)`` of learned parameters with the same multipliers."""

    start: int
    end: int
    lr_mult: float
    decay_mult: float


class ParamBuffer:
    """The flat ``data`` and ``diff`` arrays behind a net's learnable parameters.

    ``params`` are the net's learnable parameters (one per slot); ``users`` every
    (layer, blob index, param index) that holds one of them, shared or not.
    """

    def __init__(self, params: Sequence["LearnableParam"], users: Sequence[tuple["Layer", int, int]],
                 device: str, dtype):
        self.xp = array_module(device)
        self.dtype = np.dtype(dtype)
        self.shapes = [p.blob.shape for p in params]
        self.counts = [p.blob.count for p in params]
        keys = {}
        for p in params:
            if p.lr_mult != 0:
                keys.setdefault((p.lr_mult, p.decay_mult), len(keys))
        order = sorted(range(len(params)), key=lambda k: keys.get((params[k].lr_mult, params[k].decay_mult),
                                                                   len(keys)))
        self.offsets = [0] * len(params)
        runs: list[Run] = []
        position = 0
        for k in order:
            self.offsets[k] = position
            position += self.counts[k]
            p = params[k]
            if p.lr_mult == 0:
                continue
            if runs and (runs[-1].lr_mult, runs[-1].decay_mult) == (p.lr_mult, p.decay_mult):
                runs[-1] = Run(runs[-1].start, position, p.lr_mult, p.decay_mult)
            else:
                runs.append(Run(position - self.counts[k], position, p.lr_mult, p.decay_mult))
        self.size = position
        self.runs: tuple[Run, ...] = tuple(runs)
        self.learned = runs[-1].end if runs else 0
        # Caffe still updates frozen parameters (by zero), which leaves their diff zero: only needed when
        # some layer writes their diff (force_backward sets every param_propagate_down)
        self.frozen_diffs_written = any(layer.param_propagate_down[i] for layer, i, k in users
                                        if params[k].lr_mult == 0)
        self.data = self.xp.empty(self.size, self.dtype)
        self._diff = None
        for k, p in enumerate(params):
            self.slot(self.data, k)[...] = p.blob.data.reshape(-1)
        for layer, i, k in users:
            layer.blobs[i].bind(self.slot(self.data, k), lambda k=k: self.slot(self.diff, k))

    @property
    def diff(self):
        """The flat diff array (zeros when first used)."""
        if self._diff is None:
            self._diff = self.xp.zeros(self.size, self.dtype)
        return self._diff

    def slot(self, flat, k: int):
        """Parameter ``k``'s part of ``flat`` (the data, the diff, or an array laid out like them)."""
        return flat[self.offsets[k]:self.offsets[k] + self.counts[k]]

    def clear_diffs(self) -> None:
        """Set every parameter diff to zero (one memset)."""
        self.diff.fill(0)
