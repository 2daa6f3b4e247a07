"""core/blas.py: SciPy's ?gemm on NumPy views, with leading dimensions, transposes and beta."""
from __future__ import annotations

import numpy as np
import pytest

from memnet_engine.core.blas import gemm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_products_into_a_band_of_a_larger_matrix(dtype, trans_a, trans_b) -> None:
    rs = np.random.default_rng(0)
    m, k, n = 5, 7, 4
    a = rs.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b_parent = rs.standard_normal((k + 3, 9) if not trans_b else (n + 2, 11)).astype(dtype)
    b = b_parent[1:k + 1, 2:2 + n] if not trans_b else b_parent[2:2 + n, 3:3 + k]  # row stride != width
    parent = rs.standard_normal((m, 13)).astype(dtype)
    before = parent.copy()
    out = parent[:, 4:4 + n]
    gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=2.0)
    expected = 0.5 * (a.T if trans_a else a) @ (b.T if trans_b else b) + 2.0 * before[:, 4:4 + n]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(parent[:, :4], before[:, :4])  # nothing outside the band changes
    np.testing.assert_array_equal(parent[:, 4 + n:], before[:, 4 + n:])


def test_beta_zero_does_not_read_out() -> None:
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    out = np.full((2, 2), np.nan, np.float32)
    gemm(a, b, out)
    np.testing.assert_array_equal(out, np.full((2, 2), 3.0))
    empty = np.full((2, 2), np.nan, np.float32)
    gemm(np.ones((2, 0), np.float32), np.ones((0, 2), np.float32), empty)  # k = 0: out = beta * out = 0
    np.testing.assert_array_equal(empty, np.zeros((2, 2)))


@pytest.mark.parametrize("a, b, out, message", [
    (np.ones((2, 3)), np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), "one dtype"),
    (np.ones((2, 3), np.int32), np.ones((3, 2), np.int32), np.ones((2, 2), np.int32), "float32 or float64"),
    (np.ones((2, 3), np.float32), np.ones((4, 2), np.float32), np.ones((2, 2), np.float32), "do not agree"),
    (np.ones((3, 2), np.float32).T, np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), "contiguous rows"),
    (np.ones((2, 3, 1), np.float32), np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), "2-D"),
])
def test_bad_operands_are_refused(a, b, out, message) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        gemm(a, b, out)


def test_out_must_not_overlap_an_operand() -> None:
    buffer = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        gemm(buffer[:2, :2], buffer[2:, 2:], buffer[1:3, 1:3])


def test_parallel_gives_every_item_to_exactly_one_worker() -> None:
    from memnet_engine.core import blas

    seen: dict[int, list[int]] = {}
    used = blas.parallel(lambda worker, items: seen.setdefault(worker, []).extend(items), list(range(7)))
    assert used == min(blas.workers(), 7) and sorted(sum(seen.values(), [])) == list(range(7))
    assert all(items == list(range(worker, 7, used)) for worker, items in seen.items())
    assert blas.parallel(lambda worker, items: seen.setdefault(-1, []).extend(items), [3, 4], serial=True) == 1
    assert seen[-1] == [3, 4]


def test_products_on_worker_threads_match_numpy() -> None:
    from memnet_engine.core import blas

    rs = np.random.default_rng(1)
    a, b = rs.standard_normal((6, 40, 30)), rs.standard_normal((30, 20))
    out = np.empty((6, 40, 20))
    blas.parallel(lambda worker, items: [gemm(a[i], b, out[i]) for i in items], list(range(6)))
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
