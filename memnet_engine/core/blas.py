"""General matrix products on NumPy arrays through SciPy's BLAS, with leading dimensions and beta.

``numpy.matmul`` cannot accumulate (``beta``) and ``scipy.linalg.blas.sgemm`` copies any operand
that is not one contiguous block, so neither can write a product into a block of a larger matrix.
This calls the ``sgemm`` / ``dgemm`` that SciPy exports for Cython (``scipy.linalg.cython_blas``)
directly: operands are 2-D views whose rows are contiguous and whose row stride is free (the BLAS
leading dimension), so a product lands in place in any such view, with nothing copied.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

_INT = ctypes.POINTER(ctypes.c_int)
_CHAR = ctypes.c_char_p
_SCALARS = {np.dtype(np.float32): ("sgemm", ctypes.c_float), np.dtype(np.float64): ("dgemm", ctypes.c_double)}


@lru_cache(maxsize=None)
def _routine(dtype: np.dtype):
    """(function, scalar type) of SciPy's Fortran ?gemm for ``dtype``."""
    from scipy.linalg import cython_blas

    name, scalar = _SCALARS[dtype]
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    pointer = ctypes.POINTER(scalar)
    signature = ctypes.CFUNCTYPE(None, _CHAR, _CHAR, _INT, _INT, _INT, pointer, pointer, _INT, pointer, _INT,
                                 pointer, pointer, _INT)
    return signature(address), scalar


def _leading_dimension(name: str, m: np.ndarray) -> int:
    """Row stride in elements of a 2-D array whose rows are contiguous (the BLAS ``ld`` of its transpose)."""
    if m.ndim != 2:
        raise ValueError(f"gemm: {name} must be 2-D (shape {m.shape})")
    rows, cols = m.shape
    if m.size == 0:
        return max(cols, 1)
    row_stride, col_stride = m.strides
    item = m.itemsize
    if cols > 1 and col_stride != item or row_stride % item or (rows > 1 and row_stride < cols * item):
        raise ValueError(f"gemm: {name} needs contiguous rows (shape {m.shape}, strides {m.strides})")
    return max(row_stride // item if rows > 1 else cols, cols, 1)


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, *, trans_a: bool = False, trans_b: bool = False,
         alpha: float = 1.0, beta: float = 0.0) -> None:
    """``out = alpha * op(a) @ op(b) + beta * out`` in place (op: transpose where asked).

    All three are float32 or float64 (one dtype), 2-D, with contiguous rows and any row stride;
    ``out`` is not read when ``beta`` is 0 (NaN there does not propagate).
    """
    dtype = out.dtype
    if dtype not in _SCALARS or a.dtype != dtype or b.dtype != dtype:
        raise TypeError(f"gemm: float32 or float64 operands of one dtype, got {a.dtype}, {b.dtype}, {dtype}")
    if not out.flags.writeable:
        raise ValueError("gemm: out is read-only")
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        raise ValueError("gemm: out overlaps an operand")
    lda, ldb, ldc = (_leading_dimension(n, m) for n, m in (("a", a), ("b", b), ("out", out)))
    m, k = a.shape[::-1] if trans_a else a.shape
    k_b, n = b.shape[::-1] if trans_b else b.shape
    if k != k_b or out.shape != (m, n):
        raise ValueError(f"gemm: shapes {a.shape}{'^T' if trans_a else ''} @ {b.shape}{'^T' if trans_b else ''} "
                         f"-> {out.shape} do not agree")
    if m == 0 or n == 0:
        return
    if k == 0:
        out[...] = out * beta if beta else 0
        return
    routine, scalar = _routine(dtype)

    def ref(value):
        return ctypes.byref(ctypes.c_int(value))

    def data(array):
        return ctypes.cast(array.ctypes.data, ctypes.POINTER(scalar))

    # Row-major out = op(a) op(b) is column-major out^T = op(b)^T op(a)^T: BLAS sees each row-major
    # matrix as its transpose, so b comes first and the transpose flags stay as given.
    routine(b"T" if trans_b else b"N", b"T" if trans_a else b"N", ref(n), ref(m), ref(k),
            ctypes.byref(scalar(alpha)), data(b), ref(ldb), data(a), ref(lda), ctypes.byref(scalar(beta)),
            data(out), ref(ldc))
