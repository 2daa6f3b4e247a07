"""Element-wise kernels (kernels/eltwise.cu): weighted sums, products, maximum with argmax mask."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import cupy_module
from .loader import NULL, contiguous, empty_like, launch, scalar


def weighted_sum(arrays: Sequence, coeffs: Sequence[float], out=None):
    """``sum_k coeffs[k] * arrays[k]`` into ``out`` (C-contiguous) or a new array, added left to right
    (as NumPy would)."""
    first = contiguous(arrays[0])
    dt = first.dtype
    out = empty_like(first) if out is None else out
    if len(arrays) == 1:
        launch("eltwise", "weighted_sum", dt, out.size, scalar(coeffs[0], dt), first, scalar(0, dt), NULL, out)
        return out
    launch("eltwise", "weighted_sum", dt, out.size, scalar(coeffs[0], dt), first, scalar(coeffs[1], dt),
           contiguous(arrays[1]), out)
    for array, c in zip(arrays[2:], coeffs[2:]):
        launch("eltwise", "weighted_sum", dt, out.size, scalar(1, dt), out, scalar(c, dt), contiguous(array), out)
    return out


def product(arrays: Sequence):
    """``arrays[0] * arrays[1] * ...`` as a new array, multiplied left to right."""
    out = empty_like(arrays[0])
    launch("eltwise", "eltwise_prod", out.dtype, out.size, contiguous(arrays[0]), contiguous(arrays[1]), out)
    for array in arrays[2:]:
        launch("eltwise", "eltwise_prod", out.dtype, out.size, out, contiguous(array), out)
    return out


def product_grad_by_quotient(top, x, dy):
    """``(top / x) * dy``: a product's gradient for one factor x (stable_prod_grad off)."""
    dx = empty_like(dy)
    launch("eltwise", "eltwise_prod_grad", dx.dtype, dx.size, contiguous(top), contiguous(x), contiguous(dy), dx)
    return dx


def maximum_with_mask(arrays: Sequence):
    """(max, mask): the element-wise maximum and the index of the winning array (int32).

    Ties go to array 1 over array 0, then to the earliest winner (Caffe's CPU rule).
    """
    out = empty_like(arrays[0])
    mask = cupy_module().empty(out.shape, np.int32)
    launch("eltwise", "eltwise_max", out.dtype, out.size, contiguous(arrays[0]), contiguous(arrays[1]),
           np.int32(1), out, mask)
    for k, array in enumerate(arrays[2:], start=2):
        launch("eltwise", "eltwise_max", out.dtype, out.size, out, contiguous(array), np.int32(k), out, mask)
    return out, mask


def maximum_grad(dy, mask, index: int):
    """``dy`` where ``mask == index``, else 0."""
    dx = empty_like(dy)
    launch("eltwise", "eltwise_max_backward", dx.dtype, dx.size, contiguous(dy), mask, np.int32(index), dx)
    return dx
