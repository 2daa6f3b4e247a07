"""Launch and sync budget of one steady-state MemNet M6R6 training step on the GPU path (emulator counts).

Counted events, not time: every kernel launch (RawKernel, cuBLAS, CuPy element-wise/reduction ops,
memsets, copies) and every device-to-host transfer.  The counts depend on the graph (M6R6), not on
the channels or the patch size, so a narrow net on small patches keeps the test fast.
"""
from __future__ import annotations

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.memnet.models import MemNetConfig, memnet_train_net

# Issue #8's target.  Measured: 4,576 before the flat update, 2,685 with it, 1,840 with the fused
# BatchNorm+Scale+ReLU unit, 1,479 with single-launch reductions and multi-operand sums.
STEP_LAUNCH_BUDGET = 1_500
# What the solver adds to forward + backward: clearing the diffs (1 memset), storing the loss (1 copy),
# the gradient sum of squares (1 kernel), the fused update (1 kernel).
SOLVER_LAUNCH_BUDGET = 4
STEP_TRANSFER_BUDGET = 1  # device-to-host, on an iteration that does not display


def m6r6_solver(channels: int = 4, patch: int = 7) -> me.SGDSolver:
    train = memnet_train_net(MemNetConfig(6, 6, channels), source="unused.txt", batch_size=2)
    data = pb.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[2, 1, patch, patch])
    train.layer[0].CopyFrom(data)
    param = pb.SolverParameter(net_param=train, base_lr=0.01, momentum=0.9, weight_decay=1e-4, clip_gradients=1,
                               lr_policy="fixed", max_iter=10, display=0, snapshot=0, random_seed=1)
    solver = me.SGDSolver(param, device="gpu")
    rs = np.random.default_rng(0)
    for name in solver.net.inputs:
        solver.net.blobs[name].data[...] = rs.random(solver.net.blobs[name].shape, dtype=np.float32)
    return solver


@pytest.mark.slow  # ~10 s emulated
def test_m6r6_step_launches_and_transfers(emulated) -> None:
    solver = m6r6_solver()
    solver.step(1)  # warm-up: kernels compiled, arrays allocated
    with me.profile() as step:
        solver.step(1)
    solver.net.clear_param_diffs()
    with me.profile() as passes:
        solver.net.forward_backward(keep_intermediates=False)
    print(f"\nM6R6 step: {step.launches} launches {step.launches_by_kind}, {step.transfers} device-to-host; "
          f"forward + backward alone: {passes.launches}")
    assert step.complete and step.transfers <= STEP_TRANSFER_BUDGET
    assert step.launches <= STEP_LAUNCH_BUDGET
    assert step.launches - passes.launches <= SOLVER_LAUNCH_BUDGET
    assert step.kernels["sgd/sgd_update"] == 1 and step.launches_by_kind["memset"] == 1
    # what a real GPU's profile counts (our RawKernel and cuBLAS wrappers) is every such launch
    assert sum(step.kernels.values()) == step.launches_by_kind["kernel"] and step.gemms == step.launches_by_kind["blas"]
    assert np.isfinite(solver.smoothed_loss) and solver.iter == 2
