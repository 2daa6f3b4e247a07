"""NumPy's matrix products on worker threads: one thread per core, each running single-threaded BLAS.

``parallel`` splits work (e.g. the column blocks of one convolution) among the workers: the NumPy
copies around the products (im2col) run on every core too, and no BLAS thread spin-waits for a core
that another process holds (OpenBLAS's own threads slow down several times on a busy machine).
NumPy's bundled OpenBLAS is made single-threaded in each worker only (``openblas_set_num_threads_local``);
where NumPy's BLAS is not OpenBLAS there is one worker and the BLAS threads itself.
"""
from __future__ import annotations

import ctypes
import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


@lru_cache(maxsize=None)
def _local_thread_setter() -> "Callable[[int], int] | None":
    """OpenBLAS's ``openblas_set_num_threads_local`` as NumPy links it, or None (another BLAS)."""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            # dlsym on NumPy's extension module also searches the BLAS library it links
            return ctypes.CDLL(importlib.import_module(name).__file__).openblas_set_num_threads_local
        except (ImportError, AttributeError, OSError):
            continue
    return None


@lru_cache(maxsize=None)
def workers() -> int:
    """Worker threads of ``parallel``: one per core this process may use, at most ``OMP_NUM_THREADS`` when set
    (e.g. 1 for each of several ranks on one machine); 1 when BLAS cannot be single-threaded."""
    if _local_thread_setter() is None:
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
