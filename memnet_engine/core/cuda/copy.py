"""Layout copies (kernels/copy.cu): Concat slabs, NCHW <-> channel-major transposes."""
from __future__ import annotations

import numpy as np

from ..backend import cupy_module
from .loader import NULL, contiguous, ints, launch


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


def to_channel_major(x):
    """(N, C, *spatial) -> (C, N * prod(spatial)) copy."""
    n, c = x.shape[:2]
    spatial = x.size // max(n * c, 1)
    cm = cupy_module().empty((c, n * spatial), x.dtype)
    launch("copy", "nchw_to_cm", x.dtype, x.size, contiguous(x), *ints(n, c, spatial), cm)
    return cm


def from_channel_major(cm, shape: tuple[int, ...], bias=None):
    """(C, N * spatial) -> array of ``shape`` (N, C, *spatial), adding ``bias[c]`` if given."""
    x = cupy_module().empty(shape, cm.dtype)
    n, c = shape[:2]
    launch("copy", "cm_to_nchw", cm.dtype, x.size, contiguous(cm), NULL if bias is None else contiguous(bias),
           *ints(n, c, x.size // max(n * c, 1)), x)
    return x
