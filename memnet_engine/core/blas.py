"""NumPy's matrix products on worker threads: one thread per core, each running single-threaded BLAS.

``parallel`` splits work (e.g. the column blocks of one convolution) among the workers: the NumPy
copies around the products (im2col) run on every core too, and no BLAS thread spin-waits for a core
that another process holds (OpenBLAS's own threads slow down several times on a busy machine).
NumPy's bundled OpenBLAS is made single-threaded in each worker only (``openblas_set_num_threads_local``), and
compiled kernels call its GEMM directly (``gemm``); where NumPy's BLAS is another there is one worker and the
BLAS threads itself.
"""
from __future__ import annotations

import ctypes
import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


@lru_cache(maxsize=None)
def _numpy_symbol(*names: str) -> "ctypes._CFuncPtr | None":
    """The first of ``names`` that NumPy's extension module resolves (dlsym on it also searches the BLAS library
    it links), or None."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            library = ctypes.CDLL(importlib.import_module(module).__file__)
        except (ImportError, OSError):
            continue
        for name in names:
            if hasattr(library, name):
                return getattr(library, name)
    return None


def _local_thread_setter() -> "Callable[[int], int] | None":
    """OpenBLAS's ``openblas_set_num_threads_local`` as NumPy links it, or None (another BLAS)."""
    return _numpy_symbol("openblas_set_num_threads_local")


@lru_cache(maxsize=None)
def gemm(dtype) -> "ctypes._CFuncPtr | None":
    """NumPy's OpenBLAS ``cblas_sgemm`` / ``cblas_dgemm`` (64-bit integers: NumPy's wheels) for a float32 / float64
    ``dtype``, for compiled kernels to call (core/cpu ``matmul``): the products np.matmul computes, with no
    interpreter between them.  None where NumPy links another BLAS (kernels then use numba's np.dot)."""
    letter = {np.float32: "s", np.float64: "d"}.get(np.dtype(dtype).type)
    # NumPy >= 2 wheels (scipy-openblas64), NumPy 1.x wheels (openblas64_)
    function = letter and _numpy_symbol(f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_")
    if not function:
        return None
    scalar, index, flag, pointer = np.ctypeslib.as_ctypes_type(dtype), ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    prototype = ctypes.CFUNCTYPE(None, flag, flag, flag, index, index, index, scalar, pointer, index, pointer, index,
                                 scalar, pointer, index)
    return prototype(ctypes.cast(function, ctypes.c_void_p).value)


@lru_cache(maxsize=None)
def workers() -> int:
    """Worker threads of ``parallel``: one per core this process may use, at most ``OMP_NUM_THREADS`` when set
    (e.g. 1 for each of several ranks on one machine); 1 where NumPy's BLAS is not its wheels' OpenBLAS (BLAS
    threads itself)."""
    if _local_thread_setter() is None or gemm(np.float32) is None:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores, int(limit))
    return max(1, cores)


@lru_cache(maxsize=None)
def _pool(process: int) -> ThreadPoolExecutor:
    """The workers of this process (a forked child gets its own: threads do not survive a fork)."""
    return ThreadPoolExecutor(workers(), "blas", initializer=_local_thread_setter(), initargs=(1,))


def parallel(work: Callable[[int, Sequence[T]], None], items: Sequence[T], *, serial: bool = False) -> int:
    """Run ``work(k, items[k::n])`` for k < n = min(workers(), len(items)) (1 if ``serial``), each on its own
    thread: share 0 on the calling thread (its BLAS single-threaded meanwhile), the others on the workers;
    returns n.  Items go round-robin, so each worker's share is fixed by the count alone.  The caller's
    share saves a thread hand-off per call (tens of microseconds, hundreds of calls per training step)."""
    setter = _local_thread_setter()
    n = 1 if serial else min(workers(), len(items))
    if n == 0:
        return 0
    if setter is None:
        work(0, items)  # one worker: BLAS threads itself
        return 1
    others = [_pool(os.getpid()).submit(work, k, items[k::n]) for k in range(1, n)]
    previous = setter(1)
    try:
        work(0, items[0::n])
    finally:
        setter(previous)
        for future in others:  # all shares finish (their scratch stays in use) before an error propagates
            future.exception()
    for future in others:
        future.result()
    return n
