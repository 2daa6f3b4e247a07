"""Scratch memory that a net lends its layers, kept between calls, and how their GEMMs may round.

A layer asks for an array in a named slot (``"columns"``, ...); the slot's buffer grows to the
largest request and is then reused, so steady-state iterations allocate nothing.  An array's
contents are undefined when handed out and stay valid until the next request for the same slot:
layers run one at a time, so all layers of a net share its one Workspace (``Net.workspace``).  A
layer used outside a net makes its own.

``math`` is the precision of the GPU's GEMMs (the CPU has no TF32: there it changes nothing):
  "strict"  IEEE float32 products and sums (cuBLAS CUBLAS_COMPUTE_32F); golden parity holds.
  "tf32"    float32 convolutions on tensor cores with inputs rounded to TF32 (10-bit mantissa,
            relative error about 5e-4 per product; sums stay float32): faster on Ampere and later
            GPUs, but outputs drift from Caffe's by about 1e-3 relative per layer, past the golden
            float32 tolerance of deep nets.  float64 is always exact IEEE.

``fast_convolution`` (CPU): when True, the default, convolutions run by Winograd's F(2x2, 3x3) algorithm
(core/cpu/winograd.py: 3x3 stride 1, 8 or more channels on both sides; 2.25x fewer multiplications, rounding
errors as small as the direct sum's) and by the direct sum (core/cpu/direct.py: stride 1, few channels on one
side) where they apply, golden parity holding; when False, im2col + GEMM everywhere, as Caffe computes them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

from .backend import CPU, array_module

MATH_MODES = ("strict", "tf32")


class Workspace:
    """Named scratch buffers of one device, reused across layers and iterations."""

    def __init__(self, device: str = CPU, math: str = "strict", fast_convolution: bool = True):
        self.device = device
        self.math = math
        self.fast_convolution = fast_convolution
        self._buffers: dict[str, object] = {}
        self._ones: dict[np.dtype, object] = {}
        self._pass_values: "dict[Hashable, object] | None" = None

    @property
    def math(self) -> str:
        return self._math

    @math.setter
    def math(self, mode: str) -> None:
        """Settable on a live net (``solver.net.workspace.math = "tf32"``): every layer shares this workspace."""
        if mode not in MATH_MODES:
            raise ValueError(f"unknown math mode {mode!r}: use one of {', '.join(MATH_MODES)}")
        self._math = mode

    @property
    def xp(self):
        return array_module(self.device)

    def array(self, slot: str, shape: Sequence[int], dtype):
        """An uninitialised C-contiguous array of ``shape`` in ``slot`` (overwrites what the slot held)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.nbytes < nbytes:
            self._buffers.pop(slot, None)  # free the old buffer before the larger one is made
            # in 8-byte units: aligned for every dtype
            buffer = self._buffers[slot] = self.xp.empty(-(-nbytes // 8), np.float64)
        return buffer.view(np.uint8)[:nbytes].view(dtype).reshape(tuple(shape))

    def ones(self, length: int, dtype):
        """A vector of ``length`` ones (for reductions through GEMM); callers must not write to it."""
        dtype = np.dtype(dtype)
        ones = self._ones.get(dtype)
        if ones is None or ones.size < length:
            ones = self._ones[dtype] = self.xp.ones(max(length, 1), dtype)
        return ones[:length]

    @contextmanager
    def one_pass(self) -> Iterator[None]:
        """A forward or backward pass of the net, during which parameters do not change: ``per_pass`` values
        computed from them are kept until it ends (released then, and computed afresh in the next pass)."""
        self._pass_values = {}
        try:
            yield
        finally:
            self._pass_values = None

    def per_pass(self, key: Hashable, compute: Callable[[], object]) -> object:
        """``compute()``, or inside ``one_pass`` the value an earlier call with ``key`` computed in this pass
        (e.g. the transform of weights that several layers share)."""
        if self._pass_values is None:
            return compute()
        if key not in self._pass_values:
            self._pass_values[key] = compute()
        return self._pass_values[key]

    @property
    def nbytes(self) -> int:
        """Bytes held by all slots."""
        return sum(b.nbytes for b in self._buffers.values()) + sum(o.nbytes for o in self._ones.values())
