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


def test_a_solver_builds_its_nets_with_its_math_mode() -> None:
    """SGDSolver(..., math="tf32") is the opt-in TF32 mode of training (memnet-train --math tf32)."""
    import memnet_engine as me
    from memnet_engine.memnet.models import MemNetConfig, memnet_train_net

    net = memnet_train_net(MemNetConfig(1, 1, 2, multi_supervised=False), source="unused.txt", batch_size=1)
    data = me.caffe_pb2.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[1, 1, 5, 5])
    net.layer[0].CopyFrom(data)
    param = me.caffe_pb2.SolverParameter(net_param=net, base_lr=0.01, lr_policy="fixed", max_iter=1, test_iter=[1],
                                         test_interval=1, test_net_param=[net])
    for math in ("strict", "tf32"):
        solver = me.SGDSolver(param, math=math)
        assert [n.workspace.math for n in [solver.net] + solver.test_nets] == [math, math]
    with pytest.raises(ValueError, match="unknown math mode"):
        me.SGDSolver(param, math="fp16")


def test_per_pass_values_are_computed_once_in_a_pass_and_afresh_in_the_next() -> None:
    ws, calls = Workspace(), []

    def compute():
        calls.append(1)
        return len(calls)

    assert ws.per_pass("k", compute) == 1 and ws.per_pass("k", compute) == 2  # outside a pass: every time
    with ws.one_pass():
        assert ws.per_pass("k", compute) == 3 and ws.per_pass("k", compute) == 3 and ws.per_pass("j", compute) == 4
    with ws.one_pass():
        assert ws.per_pass("k", compute) == 5
    assert ws.per_pass("k", compute) == 6
