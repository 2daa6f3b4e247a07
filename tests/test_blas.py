"""core/blas.py: NumPy's matrix products on worker threads with single-threaded BLAS."""
from __future__ import annotations

import os

import numpy as np
import pytest

from memnet_engine.core import blas


def test_parallel_gives_every_item_to_exactly_one_worker() -> None:
    seen: dict[int, list[int]] = {}
    used = blas.parallel(lambda worker, items: seen.setdefault(worker, []).extend(items), list(range(7)))
    assert used == min(blas.workers(), 7) and sorted(sum(seen.values(), [])) == list(range(7))
    assert all(items == list(range(worker, 7, used)) for worker, items in seen.items())
    assert blas.parallel(lambda worker, items: seen.setdefault(-1, []).extend(items), [3, 4], serial=True) == 1
    assert seen[-1] == [3, 4]
    assert blas.parallel(lambda worker, items: seen.setdefault(-2, []).extend(items), []) == 0 and -2 not in seen


def test_products_on_worker_threads_match_the_main_thread() -> None:
    rs = np.random.default_rng(1)
    a, b = rs.standard_normal((6, 300, 200)).astype(np.float32), rs.standard_normal((200, 100)).astype(np.float32)
    out = np.full((6, 300, 100), np.nan, np.float32)
    blas.parallel(lambda worker, items: [np.matmul(a[i], b, out=out[i]) for i in items], list(range(6)))
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


def test_workers_run_single_threaded_blas_where_numpy_has_openblas() -> None:
    setter = blas._local_thread_setter()
    if setter is None:
        assert blas.workers() == 1
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    assert blas.workers() >= 1
    threads = []
    blas.parallel(lambda worker, items: threads.append(setter(1)), [0, 1], serial=True)
    assert threads == [1]  # the worker was set to one BLAS thread when it started


@pytest.mark.parametrize("setting, expected", [("1", 1), ("", None), ("0", None), ("many", None)])
def test_omp_num_threads_caps_the_workers(monkeypatch, setting, expected) -> None:
    """Several ranks on one machine run with OMP_NUM_THREADS=1 (one worker each); unset or invalid: one per core."""
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    monkeypatch.setattr(blas, "_local_thread_setter", lambda: print)  # any callable: OpenBLAS is there
    blas.workers.cache_clear()
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert blas.workers() == (expected or cores)
    finally:
        blas.workers.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_gemm_computes_what_numpy_matmul_does(dtype) -> None:
    """cpu.matmul through NumPy's OpenBLAS (blas.gemm): np.matmul's products bit for bit, for operands stored
    as they are or as transposed views, overwriting or accumulating; numba's np.dot where there is no such GEMM."""
    from memnet_engine.core.cpu import matmul
    gemm = blas.gemm(dtype)
    if gemm is None:
        assert blas.workers() == 1
    rs = np.random.default_rng(2)
    for m, k, n in [(64, 48, 200), (5, 1, 7), (3, 9, 2)]:
        a, b = rs.standard_normal((m, k)).astype(dtype), rs.standard_normal((k, n)).astype(dtype)
        for left in (a, np.ascontiguousarray(a.T).T):
            for right in (b, np.ascontiguousarray(b.T).T):
                expected = np.matmul(left, right)
                for function in (gemm, None):
                    c = np.full((m, n), np.nan, dtype)
                    matmul(function, left, right, c, False)
                    if function is None:
                        np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)
                    else:
                        np.testing.assert_array_equal(c, expected)
                    before = c.copy()
                    matmul(function, left, right, c, True)
                    np.testing.assert_allclose(c, before + expected, rtol=1e-5, atol=1e-5)
