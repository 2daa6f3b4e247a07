"""Stopping: Ctrl-C snapshots and stops, SIGHUP snapshots, a NaN loss stops without a bad snapshot."""
import os
import signal
import sys

import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES, REPO, interrupt_after
from memnet_engine.core.solver import TrainingDiverged
from memnet_engine.core.solver.signals import deferred_signals
from memnet_engine.memnet.models import MemNetConfig, memnet_train_net

SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"

TRAIN_UNTIL_INTERRUPTED = """
import sys, time
import memnet_engine as me
solver = me.SGDSolver(sys.argv[1])
solver.param.max_iter, solver.param.snapshot = 100000, 0
def report(stats):
    print("ITER", stats.iteration, flush=True)
    time.sleep(0.01)
solver.iteration_hooks.append(report)
solver.solve()
print("EARLY EXIT", solver.requested_early_exit, solver.iter, flush=True)
"""


def state_of(path) -> me.caffe_pb2.SolverState:
    state = me.caffe_pb2.SolverState()
    state.ParseFromString(path.read_bytes())
    return state


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_snapshots_and_stops(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    returncode, out, err = interrupt_after([sys.executable, "-c", TRAIN_UNTIL_INTERRUPTED, str(SOLVER)], "ITER 3\n",
                                           "stdout", cwd=tmp_path, env=env)
    assert returncode == 0, err
    assert "Traceback" not in err
    last = out.strip().splitlines()[-1].split()
    assert last[:3] == ["EARLY", "EXIT", "True"]
    stopped_at = int(last[3])
    assert 3 <= stopped_at < 100000
    snapshots = sorted(p.name for p in tmp_path.iterdir())
    assert snapshots == [f"tiny_iter_{stopped_at}.caffemodel", f"tiny_iter_{stopped_at}.solverstate"]
    state = state_of(tmp_path / snapshots[1])
    assert state.iter == stopped_at and state.learned_net == snapshots[0]


def test_request_stop_finishes_the_iteration_then_snapshots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    solver.iteration_hooks.append(lambda s: solver.request_stop() if s.iteration == 2 else None)
    solver.solve()
    assert solver.requested_early_exit and solver.iter == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_iter_2.caffemodel", "tiny_iter_2.solverstate"]


def test_sigint_handler_requests_a_stop_and_a_second_one_aborts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    before = signal.getsignal(signal.SIGINT)

    def press_ctrl_c(stats):
        if stats.iteration == 1:
            signal.raise_signal(signal.SIGINT)
        elif stats.iteration == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    solver.iteration_hooks.append(press_ctrl_c)
    solver.solve()
    assert solver.iter == 1 and (tmp_path / "tiny_iter_1.solverstate").is_file()
    with pytest.raises(KeyboardInterrupt):
        solver.solve()
    assert signal.getsignal(signal.SIGINT) is before


def test_signal_handlers_log_nothing_until_the_iteration_ends(tmp_path, monkeypatch, caplog):
    """A handler may run while a log record is being written to train.log (writing from it again raised
    'reentrant call inside BufferedWriter'): its message is logged when the solver takes the request."""
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    seen = []

    def press_ctrl_c(stats):
        signal.raise_signal(signal.SIGINT)
        seen.append([r.getMessage() for r in caplog.records if "Interrupted" in r.getMessage()])

    solver.iteration_hooks.append(press_ctrl_c)
    with caplog.at_level("INFO"):
        solver.solve()
    assert seen == [[]] and solver.stop_signal == "SIGINT" and not solver.signal_notes
    assert any(r.getMessage().startswith("Interrupted: snapshotting and stopping") for r in caplog.records)


def test_request_snapshot_goes_on_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    solver.iteration_hooks.append(lambda s: solver.request_snapshot() if s.iteration == 3 else None)
    solver.step(5)
    assert solver.iter == 5 and not solver.requested_early_exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_iter_3.caffemodel", "tiny_iter_3.solverstate"]


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_last_good_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 1

    def poison(stats):
        if stats.iteration == 2:  # the next batch is NaN
            layer = solver.net.layer_dict["data"]
            for array in layer.arrays:
                array[...] = np.nan
    solver.iteration_hooks.append(poison)
    with pytest.raises(TrainingDiverged, match=r"iteration 2: the loss is nan; training stopped before updating"):
        solver.solve()
    assert isinstance(TrainingDiverged("x"), me.MemnetError)
    assert solver.iter == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"tiny_iter_{i}.{ext}" for i in (1, 2) for ext in ("caffemodel", "solverstate")]
    saved = me.Net(str(FIXTURES / "solver" / "tiny_net.prototxt"), phase=me.TRAIN, weights="tiny_iter_2.caffemodel")
    assert all(np.isfinite(blob.data).all() for blobs in saved.params.values() for blob in blobs)
    # the trained weights were not updated from the NaN batch (BatchNorm's running sums did see it)
    for ours, kept in zip(solver.net.learnable_params, saved.learnable_params):
        if ours.lr_mult:
            assert np.array_equal(ours.blob.data, kept.blob.data), ours.owner


def test_an_update_that_overflows_is_never_snapshotted(tmp_path):
    """The weights of an update that made them non-finite are not written; the message names that update."""
    train = memnet_train_net(MemNetConfig(2, 1, 4), source="unused.txt", batch_size=4)
    data = me.caffe_pb2.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[4, 1, 9, 9])
    train.layer[0].CopyFrom(data)
    param = me.caffe_pb2.SolverParameter(net_param=train, base_lr=1e-9, momentum=0.9, weight_decay=1e-4,
                                         clip_gradients=-1, lr_policy="fixed", max_iter=5, snapshot=1,
                                         random_seed=1, snapshot_prefix=str(tmp_path / "m"))
    solver = me.SGDSolver(param)
    rs = np.random.default_rng(0)
    for name in solver.net.inputs:
        solver.net.blobs[name].data[...] = 1000 * rs.random(solver.net.blobs[name].shape, dtype=np.float32)
    # from iteration 2 on, the rate of `train.py --base-lr 1e36 --clip-gradients -1`
    solver.iteration_hooks.append(lambda stats: setattr(solver.param, "base_lr", 1e36) if stats.iteration == 2
                                  else None)
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match=r"iteration 2: the update made some "
                                                  r"weights non-finite; training stopped without snapshotting"):
        solver.solve()
    assert not all(np.isfinite(p.blob.data).all() for p in solver.net.learnable_params)  # it did overflow
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"m_iter_{i}.{ext}" for i in (1, 2) for ext in ("caffemodel", "solverstate")]
    for i in (1, 2):
        saved = me.Net(train, phase=me.TRAIN, weights=str(tmp_path / f"m_iter_{i}.caffemodel"))
        assert all(np.isfinite(p.blob.data).all() for p in saved.learnable_params)
        state = me.caffe_pb2.SolverState()
        state.ParseFromString((tmp_path / f"m_iter_{i}.solverstate").read_bytes())
        assert all(np.isfinite(h.data).all() for h in state.history)


def test_infinite_gradient_norm_stops_before_the_update(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    assert solver.param.clip_gradients >= 0  # the norm is computed for clipping
    layer = next(layer for layer in solver.net.layers if layer.param_propagate_down and layer.param_propagate_down[0])
    backward = layer.backward

    def poisoned(*args):
        backward(*args)
        layer.blobs[0].diff[...] = np.inf
    monkeypatch.setattr(layer, "backward", poisoned)
    learned = [p for p in solver.net.learnable_params if p.lr_mult]  # (forward moves BatchNorm's statistics)
    before = [p.blob.data.copy() for p in learned]
    with pytest.raises(TrainingDiverged, match=r"iteration 0: the gradient norm is inf"):
        solver.step(1)
    assert all(np.array_equal(b, p.blob.data) for b, p in zip(before, learned))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_sigterm_and_sigusr1_snapshot_and_stop_like_ctrl_c(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    solver.iteration_hooks.append(lambda s: signal.raise_signal(getattr(signal, name)) if s.iteration == 2 else None)
    solver.solve()
    assert solver.requested_early_exit and solver.iter == 2 and solver.stop_signal == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_iter_2.caffemodel", "tiny_iter_2.solverstate"]
    assert solver.last_snapshot == "tiny_iter_2.solverstate"


def test_signal_effects_are_configurable_and_a_second_stop_aborts_naming_the_signal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot, solver.param.max_iter = 0, 4
    solver.signal_effects.update(SIGTERM="none", SIGUSR1="snapshot")
    solver.iteration_hooks.append(lambda s: signal.raise_signal(signal.SIGTERM if s.iteration == 1 else signal.SIGUSR1)
                                  if s.iteration in (1, 2) else None)
    solver.solve()
    assert solver.iter == 4 and not solver.requested_early_exit  # TERM ignored, USR1 snapshotted, the run went on
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny_iter_{i}.{e}" for i in (2, 4)
                                                          for e in ("caffemodel", "solverstate")]
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    solver.iteration_hooks.append(lambda s: [signal.raise_signal(signal.SIGTERM) for _ in range(2)])
    with pytest.raises(KeyboardInterrupt) as aborted:
        solver.solve()
    assert aborted.value.args == ("SIGTERM",)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_deferred_signals_act_after_the_block_as_the_handlers_before_would(default_sigint):
    steps = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            signal.raise_signal(signal.SIGINT)
            steps.append("the block went on")
    assert steps == ["the block went on"] and signal.getsignal(signal.SIGINT) is before
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: steps.append(signal.Signals(signum).name))
    try:
        with deferred_signals():
            signal.raise_signal(signal.SIGHUP)
            steps.append("held")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert steps[1:] == ["held", "SIGHUP"]
