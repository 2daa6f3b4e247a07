"""Device memory of one MemNet M6R6 (C64) training step at batch 2 of 31x31, counted by the emulator.

Issue #8's budget: at most 150 MiB of live device arrays at the step's peak (PyTorch keeps about
127 MiB of activations + 8 MiB of parameters, gradients and momentum for the same step; the engine
held 432 MiB when it kept every blob).  The memory plan and the fused BatchNorm -> Scale -> ReLU
unit bring it to about 89 MiB.
"""
from __future__ import annotations

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.memnet.models import MemNetConfig, memnet_train_net

BUDGET_BYTES = 150 * 2**20


def m6r6_solver(batch: int, patch: int) -> me.SGDSolver:
    """The release's M6R6 with Input data, solved as the golden MemNet solver (clip 1, momentum, decay)."""
    train = memnet_train_net(MemNetConfig(6, 6, 64), source="unused.txt", batch_size=batch)
    data = pb.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[batch, 1, patch, patch])
    train.layer[0].CopyFrom(data)
    param = pb.SolverParameter(net_param=train, base_lr=0.01, momentum=0.9, weight_decay=1e-4, clip_gradients=1,
                               lr_policy="fixed", max_iter=10, display=0, snapshot=0, random_seed=1)
    return me.SGDSolver(param, device="gpu")


@pytest.mark.slow  # about a minute on the emulator
def test_m6r6_training_step_peak_device_memory_fits_the_budget(gpu) -> None:
    if not hasattr(gpu, "memory"):
        pytest.skip("live-byte accounting is the emulator's")
    solver = m6r6_solver(batch=2, patch=31)
    net = solver.net
    rs = np.random.default_rng(0)
    for name in net.inputs:
        net.blobs[name].data = gpu.asarray(rs.random(net.blobs[name].shape, dtype=np.float32))
    solver.step(1)  # parameter gradients, kept outputs and the convolutions' workspace exist from now on
    live = gpu.memory["live"]
    gpu.reset_peak()
    solver.step(1)
    assert np.isfinite(float(solver.smoothed_loss))
    print(f"\nM6R6 step at batch 2 of 31x31: peak {gpu.memory['peak'] / 2**20:.1f} MiB of device arrays, "
          f"{live / 2**20:.1f} MiB between steps")
    assert gpu.memory["peak"] <= BUDGET_BYTES, f"peak {gpu.memory['peak'] / 2**20:.1f} MiB"
    assert gpu.memory["live"] == live  # a step leaves nothing behind: the next one peaks the same
    kept = {name for name, blob in net.blobs.items() if not blob.data_released}
    assert kept == set(net.outputs) | set(net.inputs)
