"""Snapshot pairs: both files or neither, a full disk named, recovery after a kill, pruning, integrity."""
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES, GOLDEN_FIXTURES, REPO
from memnet_engine.core.integrity import read_seal, seal, unseal
from memnet_engine.core.solver import snapshot
from memnet_engine.core.solver.state import read_solver_state
from memnet_engine.core.weights import save_weights

SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"
EXTS = (".caffemodel", ".solverstate")


def trained(tmp_path, monkeypatch, iterations=2):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    solver.param.snapshot_prefix = str(tmp_path / "run" / "tiny")
    solver.step(iterations)
    return solver


def names(folder):
    return sorted(os.listdir(folder))


def test_a_snapshot_is_a_pair_whose_solverstate_names_and_seals_its_caffemodel(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch)
    state = solver.snapshot()
    assert names(tmp_path / "run") == ["tiny_iter_2.caffemodel", "tiny_iter_2.solverstate"]
    model = state[:-len(".solverstate")] + ".caffemodel"
    assert read_solver_state(state).learned_net == model
    state_seal = unseal(open(state, "rb").read())
    assert state_seal.intact and state_seal.paired == read_seal(open(model, "rb").read()).digest


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_ctrl_c_during_a_snapshot_aborts_after_the_whole_pair(tmp_path, monkeypatch, default_sigint):
    solver = trained(tmp_path, monkeypatch)
    real_write = snapshot._write_file

    def interrupted(path, data):
        real_write(path, data)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(snapshot, "_write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        solver.snapshot()
    assert names(tmp_path / "run") == ["tiny_iter_2.caffemodel", "tiny_iter_2.solverstate"]


def test_a_solverstate_whose_caffemodel_was_replaced_is_refused(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch)
    state = solver.snapshot()
    model = state[:-len(".solverstate")] + ".caffemodel"
    original = open(model, "rb").read()
    solver.step(1)
    save_weights(solver.net, model)  # another run's weights under the same name
    with pytest.raises(me.WeightsError, match=r"tiny_iter_2\.solverstate was written with another .*tiny_iter_2\."
                                              r"caffemodel \(its SHA-256 differs\)"):
        me.SGDSolver(str(SOLVER)).restore(state)
    open(model, "wb").write(original)
    resumed = me.SGDSolver(str(SOLVER))
    resumed.restore(state)
    assert resumed.iter == 2


@pytest.mark.parametrize("failing_write", [0, 1])  # the caffemodel's or the solverstate's
def test_a_full_disk_names_the_file_and_the_bytes_and_keeps_the_previous_pair(tmp_path, monkeypatch, failing_write):
    solver = trained(tmp_path, monkeypatch)
    solver.snapshot()
    before = {name: (tmp_path / "run" / name).read_bytes() for name in names(tmp_path / "run")}
    solver.step(1)
    real_write, calls = snapshot._write_file, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) - 1 == failing_write:
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2])  # half written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(snapshot, "_write_file", full_disk)
    with pytest.raises(snapshot.SnapshotError) as error:
        solver.snapshot()
    target = tmp_path / "run" / f"tiny_iter_3{EXTS[failing_write]}"
    assert str(error.value).startswith(f"cannot write snapshot {target}: No space left on device (the pair needs ")
    assert " bytes" in str(error.value) and "free in" in str(error.value) and "previous snapshots are intact" in \
        str(error.value)
    assert isinstance(error.value, me.MemnetError)
    assert {name: (tmp_path / "run" / name).read_bytes() for name in names(tmp_path / "run")} == before  # no temps


def test_a_kill_between_the_renames_is_completed_at_the_next_start(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch)
    real_replace, renamed = os.replace, []

    def killed_after_the_first(src, dst):
        if renamed:
            raise KeyboardInterrupt  # as a second Ctrl-C between the two renames
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(snapshot.os, "replace", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        solver.snapshot()
    monkeypatch.setattr(snapshot.os, "replace", real_replace)
    left = names(tmp_path / "run")
    assert "tiny_iter_2.caffemodel" in left and "tiny_iter_2.solverstate" not in left
    assert any(name.startswith(".tiny_iter_2.") and name.endswith(".tmp.solverstate") for name in left)
    done = snapshot.recover(solver.param.snapshot_prefix)
    assert done.completed == [str(tmp_path / "run" / "tiny_iter_2.solverstate")] and not done.removed
    assert names(tmp_path / "run") == ["tiny_iter_2.caffemodel", "tiny_iter_2.solverstate"]
    fresh = me.SGDSolver(str(SOLVER))
    fresh.restore(str(tmp_path / "run" / "tiny_iter_2.solverstate"))
    assert fresh.iter == 2


def test_recovery_never_pairs_a_solverstate_with_another_runs_caffemodel(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch)
    solver.snapshot()  # an older run's pair at iteration 2
    old = {name: (tmp_path / "run" / name).read_bytes() for name in names(tmp_path / "run")}
    other = me.SGDSolver(str(SOLVER))  # another run reaches iteration 2 with other weights ...
    other.param.snapshot_prefix = solver.param.snapshot_prefix
    other.net.params["conv1"][0].data[...] += 1
    other.iter = 2
    real_write, written = snapshot._write_file, []

    def killed_after_writing_both(path, data):
        real_write(path, data)
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt  # ... and is killed before renaming anything

    monkeypatch.setattr(snapshot, "_write_file", killed_after_writing_both)
    with pytest.raises(KeyboardInterrupt):
        other.snapshot()
    temps = [name for name in names(tmp_path / "run") if ".tmp." in name]
    assert temps == []  # nothing was renamed: the write removed its temporary files
    # a complete temporary solverstate of that other run, next to the old caffemodel, is not paired with it
    stray = tmp_path / "run" / ".tiny_iter_2.abcdefgh.tmp.solverstate"
    stray.write_bytes(seal(other.solver_state("x").SerializeToString(), paired=b"\0" * 32))
    done = snapshot.recover(solver.param.snapshot_prefix)
    assert done.completed == [] and done.removed == [stray.name]
    assert {name: (tmp_path / "run" / name).read_bytes() for name in names(tmp_path / "run")} == old


def test_recovery_removes_half_written_files_and_only_its_prefixs(tmp_path):
    (tmp_path / ".tiny_iter_5.a1b2c3d4.tmp.caffemodel").write_bytes(b"half")
    (tmp_path / ".tiny_iter_5.a1b2c3d4.tmp.solverstate").write_bytes(b"half")
    (tmp_path / ".other_iter_5.a1b2c3d4.tmp.caffemodel").write_bytes(b"not ours")
    done = snapshot.recover(str(tmp_path / "tiny"))
    assert sorted(done.removed) == [".tiny_iter_5.a1b2c3d4.tmp.caffemodel", ".tiny_iter_5.a1b2c3d4.tmp.solverstate"]
    assert names(tmp_path) == [".other_iter_5.a1b2c3d4.tmp.caffemodel"]


def test_keep_snapshots_keeps_the_newest_pairs(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch, iterations=0)
    solver.keep_snapshots = 2
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tiny_iter_0.caffemodel").write_bytes(b"a lone older caffemodel")
    for _ in range(4):
        solver.step(1)
        solver.snapshot()
    assert names(tmp_path / "run") == [f"tiny_iter_{i}{ext}" for i in (3, 4) for ext in EXTS]


def test_a_flipped_bit_in_our_snapshot_is_detected_and_caffes_files_still_load(tmp_path, monkeypatch):
    solver = trained(tmp_path, monkeypatch)
    state = solver.snapshot()
    model = state.replace(".solverstate", ".caffemodel")
    for path, load in ((model, lambda p: me.Net(str(FIXTURES / "solver" / "tiny_net.prototxt"), me.TRAIN,
                                                   weights=p)),
                       (state, lambda p: me.SGDSolver(str(SOLVER)).restore(p))):
        raw = bytearray(open(path, "rb").read())
        raw[len(raw) // 2] ^= 0x10
        flipped = str(tmp_path / ("flipped" + os.path.splitext(path)[1]))
        open(flipped, "wb").write(bytes(raw))
        with pytest.raises(me.WeightsError, match="checksum mismatch"):
            load(flipped)
        open(flipped, "wb").write(open(path, "rb").read()[:-7])
        with pytest.raises(me.WeightsError, match="checksum mismatch"):
            load(flipped)
    caffe = GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"  # written by Caffe: no digest, read as it is
    assert read_seal(caffe.read_bytes()) is None
    me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"), me.TEST, weights=str(caffe))
    # a file of ours that Caffe read and wrote again keeps the field, moved to the end: read as Caffe's
    resaved = me.caffe_pb2.NetParameter.FromString(open(model, "rb").read())
    moved = str(tmp_path / "resaved.caffemodel")
    open(moved, "wb").write(resaved.SerializeToString())
    assert read_seal(open(moved, "rb").read()) is None
    me.Net(str(FIXTURES / "solver" / "tiny_net.prototxt"), me.TRAIN, weights=moved)


KILLED_TRAINING = """
import sys
import memnet_engine as me
solver = me.SGDSolver(sys.argv[1])
solver.param.max_iter, solver.param.snapshot = 100000, 1
solver.param.snapshot_prefix = sys.argv[2]
solver.iteration_hooks.append(lambda stats: print("ITER", stats.iteration, flush=True))
solver.solve()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_at_random_moments_never_leaves_a_lone_file_after_the_next_start(tmp_path):
    """A few trials here (snapshots every iteration); the report's run does hundreds."""
    rng = np.random.default_rng(14)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    prefix = str(tmp_path / "run" / "tiny")
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(SOLVER), prefix], cwd=SOLVER.parent,
                                env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("ITER 2"):  # the first pair is whole: a busy machine cannot make the kill too early
                break
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        snapshot.recover(prefix)  # what the next start does first
        left = names(tmp_path / "run")
        assert not [name for name in left if name.startswith(".")], left
        found = snapshot.snapshot_iterations(prefix)
        assert found and all(exts == set(EXTS) for exts in found.values()), (trial, left)
        newest = max(found)
        assert read_solver_state(f"{prefix}_iter_{newest}.solverstate").iter == newest
