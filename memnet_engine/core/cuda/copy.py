"""Layout copies (kernels/copy.cu): Concat slabs."""
from __future__ import annotations

import numpy as np

from ..backend import cupy_module
from .loader import contiguous, ints, launch


def concat_into(top, bottom, axis: int, offset: int) -> None:
    """Copy ``bottom`` into ``top`` at ``offset`` along ``axis`` (shapes agree elsewhere)."""
    inner = int(np.prod(top.shape[axis + 1:], dtype=np.int64))
    launch("copy", "concat_copy", top.dtype, bottom.size, contiguous(bottom),
           *ints(bottom.shape[axis] * inner, top.shape[axis] * inner, offset * inner, 1), top)


def concat_slice(top_diff, shape: tuple[int, ...], axis: int, offset: int):
    """The part of ``top_diff`` that belongs to a bottom of ``shape`` at ``offset`` along ``axis``."""
    out = cupy_module().empty(shape, top_diff.dtype)
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    launch("copy", "concat_copy", out.dtype, out.size, contiguous(top_diff),
           *ints(shape[axis] * inner, top_diff.shape[axis] * inner, offset * inner, 0), out)
    return out
