"""General matrix products on NumPy arrays through SciPy's BLAS, with leading dimensions and beta,
and a pool of worker threads that each run single-threaded BLAS.

``numpy.matmul`` cannot accumulate (``beta``) and ``scipy.linalg.blas.sgemm`` copies any operand
that is not one contiguous block, so neither can write a product into a block of a larger matrix.
``gemm`` calls the ``sgemm`` / ``dgemm`` that SciPy exports for Cython (``scipy.linalg.cython_blas``)
directly: operands are 2-D views whose rows are contiguous and whose row stride is free (the BLAS
leading dimension), so a product lands in place in any such view, with nothing copied.

``parallel`` splits work (e.g. the column blocks of one convolution) among one thread per core,
each with single-threaded OpenBLAS (``openblas_set_num_threads_local``): the NumPy copies around
the products run on every core too, and no BLAS thread spin-waits for a core that another process
holds (OpenBLAS's own threads slow down several times on a busy machine).  Where SciPy's BLAS is
not OpenBLAS, there is one worker and the BLAS threads itself.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

_INT = ctypes.POINTER(ctypes.c_int)
_CHAR = ctypes.c_char_p
_SCALARS = {np.dtype(np.float32): ("sgemm", ctypes.c_float), np.dtype(np.float64): ("dgemm", ctypes.c_double)}


def _address(name: str) -> int:
    """Address of a function that ``scipy.linalg.cython_blas`` exports."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


@lru_cache(maxsize=None)
def _routine(dtype: np.dtype):
    """(function, scalar type) of SciPy's Fortran ?gemm for ``dtype``."""
    name, scalar = _SCALARS[dtype]
    address = _address(name)
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


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


@lru_cache(maxsize=None)
def _local_thread_setter() -> "Callable[[int], int] | None":
    """OpenBLAS's ``openblas_set_num_threads_local`` as SciPy's BLAS links it, or None (another BLAS, no dladdr)."""
    try:
        info = _DlInfo()
        if not ctypes.CDLL(None).dladdr(ctypes.c_void_p(_address("sgemm")), ctypes.byref(info)):
            return None
        # dlsym on SciPy's cython_blas module also searches the BLAS library it links
        return ctypes.CDLL(info.dli_fname.decode()).openblas_set_num_threads_local
    except (AttributeError, OSError):
        return None


@lru_cache(maxsize=None)
def workers() -> int:
    """Worker threads of ``parallel``: one per core this process may use (1 when BLAS cannot be single-threaded)."""
    if _local_thread_setter() is None:
        return 1
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


@lru_cache(maxsize=None)
def _pool(process: int) -> ThreadPoolExecutor:
    """The workers of this process (a forked child gets its own: threads do not survive a fork)."""
    return ThreadPoolExecutor(workers(), "blas", initializer=_local_thread_setter(), initargs=(1,))


def parallel(work: Callable[[int, Sequence[T]], None], items: Sequence[T], *, serial: bool = False) -> int:
    """Run ``work(k, items[k::n])`` for k < n = min(workers(), len(items)) (1 if ``serial``), each on its own
    worker thread; returns n.  Items go round-robin, so each worker's share is fixed by the count alone."""
    n = 1 if serial else min(workers(), len(items))
    if n <= 1 and _local_thread_setter() is None:
        work(0, items)  # BLAS threads itself
        return 1
    for future in [_pool(os.getpid()).submit(work, k, items[k::n]) for k in range(n)]:
        future.result()
    return n
