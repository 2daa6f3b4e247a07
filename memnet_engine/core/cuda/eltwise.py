"""Element-wise kernels (kernels/eltwise.cu): weighted sums, products, maximum with argmax mask."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import cupy_module
from .loader import NULL, contiguous, empty_like, launch, scalar


TERMS = 4  # arrays per launch of weighted_sum / scaled_copies


def _terms(pairs: Sequence[tuple], dt) -> list:
    """(coefficient, pointer) kernel arguments for up to TERMS pairs, padded with (0, NULL)."""
    args = []
    for c, array in list(pairs) + [(0, None)] * (TERMS - len(pairs)):
        args += [scalar(c, dt), NULL if array is None else array]
    return args


def weighted_sum(arrays: Sequence, coeffs: Sequence[float], out=None):
    """``sum_k coeffs[k] * arrays[k]`` into ``out`` (C-contiguous) or a new array, added left to right
    (as NumPy would): one launch per TERMS arrays."""
    first = contiguous(arrays[0])
    dt = first.dtype
    out = empty_like(first) if out is None else out
    pairs = [(c, contiguous(a)) for c, a in zip(coeffs, arrays)]
    launch("eltwise", "weighted_sum", dt, out.size, *_terms(pairs[:TERMS], dt), out)
    for k in range(TERMS, len(pairs), TERMS - 1):  # carry the running sum on
        launch("eltwise", "weighted_sum", dt, out.size, *_terms([(1, out)] + pairs[k:k + TERMS - 1], dt), out)
    return out


def scaled_copies(x, coeffs: Sequence[float]) -> list:
    """``[c * x for c in coeffs]`` as new arrays: one launch per TERMS of them."""
    x = contiguous(x)
    outs = [empty_like(x) for _ in coeffs]
    pairs = list(zip(coeffs, outs))
    for k in range(0, len(pairs), TERMS):
        launch("eltwise", "scaled_copies", x.dtype, x.size, x, *_terms(pairs[k:k + TERMS], x.dtype))
    return outs


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
