"""core/workspace.py: named scratch slots that grow to the largest request and are then reused."""
from __future__ import annotations

import numpy as np
import pytest

from memnet_engine.core.workspace import Workspace


def test_a_slot_is_reused_and_grows_to_the_largest_request() -> None:
    ws = Workspace()
    first = ws.array("columns", (4, 6), np.float32)
    smaller = ws.array("columns", (3, 2), np.float64)
    assert np.shares_memory(first, smaller) and smaller.shape == (3, 2) and smaller.dtype == np.float64
    other = ws.array("other", (2,), np.float32)
    assert not np.shares_memory(first, other)
    held = ws.nbytes
    larger = ws.array("columns", (10, 10), np.float32)
    assert larger.flags.c_contiguous and larger.shape == (10, 10)
    assert not np.shares_memory(larger, first) and ws.nbytes == held - 96 + 400  # the old buffer is dropped
    assert np.shares_memory(ws.array("columns", (5, 5), np.float32), larger)


def test_ones_are_ones_of_any_length() -> None:
    ws = Workspace()
    np.testing.assert_array_equal(ws.ones(5, np.float32), np.ones(5))
    long = ws.ones(9, np.float32)
    np.testing.assert_array_equal(long, np.ones(9))
    assert np.shares_memory(ws.ones(3, np.float32), long) and ws.ones(0, np.float64).size == 0


def test_unknown_math_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown math mode 'fp16': use one of strict, tf32"):
        Workspace(math="fp16")
