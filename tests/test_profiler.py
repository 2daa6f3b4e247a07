"""me.profile(): per-layer-type times, transfers, launches and peak memory of a block of engine work."""
import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES
from memnet_engine.core import profiler


def test_profile_of_a_cpu_training_step(monkeypatch):
    monkeypatch.chdir(FIXTURES / "solver")
    solver = me.SGDSolver("tiny_solver.prototxt")
    with me.profile(device="cpu") as prof:
        solver.step(1)
    assert profiler.active is None
    assert prof.launches == 0 and prof.transfers == 0 and not prof.complete  # nothing runs on a device
    # a solver step runs each BatchNorm -> Scale -> ReLU chain as one fused unit
    assert {"HDF5Data", "Convolution", "BatchNorm+Scale+ReLU", "EuclideanLoss"} <= set(prof.layer_times)
    forward, backward = prof.layer_times["Convolution"]
    assert forward > 0 and backward > 0
    assert 0 < sum(map(sum, prof.layer_times.values())) <= prof.wall_ms
    assert prof.peak_bytes > solver.net.blobs["conv1"].count * 4  # at least one activation was allocated
    report = prof.report()
    assert "device-to-host transfers: 0" in report and "  Convolution" in report
    with me.profile(device="cpu") as again:
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with me.profile():
                pass
    assert not again.layer_times


def test_profile_records_nothing_outside_its_block(monkeypatch):
    monkeypatch.chdir(FIXTURES / "solver")
    solver = me.SGDSolver("tiny_solver.prototxt")
    with me.profile(device="cpu") as prof:
        pass
    solver.step(1)
    assert not prof.layer_times and prof.wall_ms >= 0 and np.isfinite(solver.smoothed_loss)
