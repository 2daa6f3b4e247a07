"""CPU kernels compiled by numba: Winograd convolution (``winograd``), direct convolution (``direct``), the
fused BatchNorm unit (``bn_scale_relu``); ``matmul``, their matrix products."""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit


def kernel(**options) -> Callable:
    """``numba.njit(nogil=True, cache=True, **options)``, uncached where numba finds no writable folder for
    its cache (a read-only install and home): the kernels then compile again in each process (seconds)."""
    def compiled(function: Callable) -> Callable:
        try:
            return njit(nogil=True, cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
            return njit(nogil=True, **options)(function)
    return compiled


def c_typed(a: np.ndarray) -> np.ndarray:
    """``a`` (N, C, ...) as an array that numba types C-contiguous, so that the kernels' loops vectorise.

    A channel slice of a larger blob (a zero-copy Concat's input) is not; it becomes the view from its first
    element with the parent's channel count (same strides).  The kernels touch only the channels they are
    given, the slice's, never the view's others (past the slice; the last image's run beyond the parent's
    memory).  Other layouts stay as they are (numba's general layout: correct, slower)."""
    if a.flags.c_contiguous:
        return a
    inner = a[0, 0]
    image_stride, channel_stride = a.strides[:2]
    if inner.flags.c_contiguous and channel_stride == inner.nbytes and image_stride % channel_stride == 0:
        return np.lib.stride_tricks.as_strided(a, (a.shape[0], image_stride // channel_stride) + a.shape[2:],
                                               a.strides)
    return a


@kernel(fastmath={"reassoc"})
def dot64(a, b):  # pragma: no cover (compiled)
    """sum of a[k] * b[k] (products in the arrays' dtype) in float64, in the order of LLVM's vector lanes (the
    kernels' only fast-math).  Callers pass contiguous scratch rows, so the order depends on the row length
    alone, not on the blobs' layout."""
    total = 0.0
    for k in range(a.size):
        total += np.float64(a[k] * b[k])
    return total


@kernel(fastmath={"reassoc"})
def sum64(a):  # pragma: no cover (compiled)
    """sum of a[k] in float64, in ``dot64``'s order."""
    total = 0.0
    for k in range(a.size):
        total += np.float64(a[k])
    return total


@kernel()
def matmul(gemm, a, b, c, accumulate):  # pragma: no cover (compiled)
    """c = a @ b, or c += a @ b with ``accumulate``: 2-D arrays of one float dtype, each row-major or (a, b) a
    transposed view of one, with unit steps along their rows.  ``gemm``: NumPy's OpenBLAS GEMM for the dtype
    (core/blas ``gemm``), which computes what np.matmul does, bit for bit; None where there is none (numba's
    np.dot).  CBLAS row-major order (101), each operand as stored (111) or transposed (112)."""
    if gemm is None:
        product = np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b))
        if accumulate:
            c += product
        else:
            c[:] = product
        return
    (a_layout, a_step), (b_layout, b_step), (_, c_step) = _operand(a), _operand(b), _operand(c)
    gemm(np.int32(101), a_layout, b_layout, c.shape[0], c.shape[1], a.shape[1], c.dtype.type(1), a.ctypes.data,
         a_step, b.ctypes.data, b_step, c.dtype.type(1 if accumulate else 0), c.ctypes.data, c_step)


@kernel()
def _operand(a):  # pragma: no cover (compiled)
    """(CBLAS layout: 111 as stored, 112 transposed; leading dimension) of a row-major matrix or transposed view."""
    size = a.itemsize
    if a.strides[1] == size:
        return np.int32(111), max(a.strides[0] // size, a.shape[1])
    return np.int32(112), max(a.strides[1] // size, a.shape[0])
