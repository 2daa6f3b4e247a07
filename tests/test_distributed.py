"""Data-parallel training: launch detection, data shards, and `mpirun -np 2 tools/train.py` against a
single-process reference that averages the two shards' gradients (MPI tests skip without mpi4py/mpiexec)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES, REPO
from memnet_engine.core.distributed import World, launched_world
from memnet_engine.core.solver.solver import SingleProcess
from memnet_engine.core.solver.state import read_solver_state

SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"
TOOL = REPO / "tools" / "train.py"


# ---------------------------------------------------------------------------- without MPI
@pytest.mark.parametrize("env, world", [
    ({}, World(0, 1, 0)),
    ({"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"}, World(1, 4, 1)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, World(5, 8, 1)),
    ({"PMIX_RANK": "2", "PMIX_SIZE": "3"}, World(2, 3, 2)),
])
def test_the_launchers_environment_gives_the_world(env, world):
    assert launched_world(env) == world
    assert world.distributed == (world.size > 1) and world.is_root == (world.rank == 0)


def shard_rows(rank: int, count: int, batches: int, skip: int = 0) -> list:
    """Labels (row ids) that rank ``rank`` of ``count`` reads from the tiny solver's shuffled data."""
    me.set_random_seed(7)
    solver = me.SGDSolver(str(SOLVER))
    layer = solver.net.layer_dict["data"]
    layer.shard(rank, count)
    layer.skip_batches(skip)
    return [tuple(np.round(layer.next_batch()[0].reshape(layer.batch_size, -1)[:, 0], 5)) for _ in range(batches)]


def test_shards_split_the_single_stream_row_by_row(monkeypatch):
    monkeypatch.chdir(SOLVER.parent)
    single = [row for batch in shard_rows(0, 1, 8) for row in batch]
    rank0 = [row for batch in shard_rows(0, 2, 4) for row in batch]
    rank1 = [row for batch in shard_rows(1, 2, 4) for row in batch]
    assert rank0 == single[0::2] and rank1 == single[1::2]  # Caffe's Skip: offset % K == rank


def test_a_shard_skips_what_its_rank_read(monkeypatch):
    monkeypatch.chdir(SOLVER.parent)
    assert shard_rows(1, 2, 5)[3:] == shard_rows(1, 2, 2, skip=3)


# ---------------------------------------------------------------------------- the reference
class TwoShards(SingleProcess):
    """In one process, what 2 ranks compute: a second net on shard 1 sharing the weights; the mean gradient."""

    size = 2

    def __init__(self, solver):
        self.twin = me.SGDSolver(str(SOLVER)).net
        self.twin.share_weights_with(solver.net)
        for layer in self.twin.layers:  # BatchNorm statistics stay per rank
            if layer.type == "BatchNorm":
                layer.blobs = [me.Blob(b.shape) for b in solver.net.layer_dict[layer.name].blobs]
                for own, shared in zip(layer.blobs, solver.net.layer_dict[layer.name].blobs):
                    own.data = shared.data.copy()
        for net, rank in ((solver.net, 0), (self.twin, 1)):
            net.layer_dict["data"].shard(rank, 2)

    def gradients_ready(self, solver) -> None:
        mine = [p.blob.diff.copy() for p in solver.net.learnable_params]
        solver.net.clear_param_diffs()
        for _ in range(solver.param.iter_size):
            self.twin.forward_backward()
        for param, first in zip(solver.net.learnable_params, mine):
            param.blob.diff[...] = (first + param.blob.diff) * np.float32(0.5)


def reference_solver(iterations: int) -> me.SGDSolver:
    me.set_random_seed(7)
    solver = me.SGDSolver(str(SOLVER))
    solver.coordinator = TwoShards(solver)
    solver.step(iterations)
    return solver


# ---------------------------------------------------------------------------- with MPI
def mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'memnet-engine[mpi]')")
    for candidate in (Path(sys.executable).parent / "mpiexec", shutil.which("mpiexec"), shutil.which("mpirun")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("no mpiexec on this machine")


def mpirun(ranks: int, *args, cwd, timeout=240, wait=True):
    command = [mpiexec(), "-np", str(ranks), sys.executable, str(TOOL), str(SOLVER), *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def params_of(path):
    net = me.Net(str(FIXTURES / "solver" / "tiny_net.prototxt"), phase=me.TRAIN, weights=str(path))
    return {(name, i): blob.data.copy() for name, blobs in net.params.items() for i, blob in enumerate(blobs)}


def test_two_ranks_train_like_the_averaged_two_shard_reference(tmp_path, monkeypatch):
    run = mpirun(2, "--out", tmp_path, "--max-iter", 8, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "loss_curve.png", "tiny_iter_4.caffemodel", "tiny_iter_4.solverstate", "tiny_iter_8.caffemodel",
        "tiny_iter_8.solverstate", "train.log"]  # one set of snapshots and one log, from rank 0
    log = (tmp_path / "train.log").read_text()
    assert "on each of 2 ranks (data-parallel)" in log and log.count("Iteration 8, loss") == 1
    monkeypatch.chdir(SOLVER.parent)  # the solver's relative data paths
    reference = reference_solver(8).net
    trained = params_of(tmp_path / "tiny_iter_8.caffemodel")
    for (name, i), value in trained.items():
        expected = reference.params[name][i].data
        assert np.isfinite(value).all()
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=f"{name}/{i}")
    single = me.SGDSolver(str(SOLVER))  # guard: one rank on all the data gives other weights
    single.step(8)
    assert not np.allclose(single.net.params["conv1"][0].data, trained[("conv1", 0)], rtol=1e-3)


def test_resume_of_a_two_rank_snapshot_with_two_and_with_one_rank(tmp_path):
    straight, two, one = (tmp_path / n for n in ("straight", "two", "one"))
    assert mpirun(2, "--out", straight, "--max-iter", 8, cwd=tmp_path).returncode == 0
    first = mpirun(2, "--out", two, "--max-iter", 4, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(two, one)
    state = "tiny_iter_4.solverstate"
    again = mpirun(2, "--out", two, "--max-iter", 8, "--snapshot", two / state, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    # same K: the shards' data cursors replay exactly
    assert (two / "tiny_iter_8.caffemodel").read_bytes() == (straight / "tiny_iter_8.caffemodel").read_bytes()
    states = [read_solver_state(str(folder / "tiny_iter_8.solverstate")) for folder in (two, straight)]
    assert [h.SerializeToString() for h in states[0].history] == [h.SerializeToString() for h in states[1].history]
    alone = subprocess.run([sys.executable, str(TOOL), str(SOLVER), "--out", str(one), "--max-iter", "8",
                            "--snapshot", str(one / state)], cwd=tmp_path, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=240)
    assert alone.returncode == 0, alone.stderr[-3000:]
    log = (one / "train.log").read_text()
    losses = [float(line.rsplit("=", 1)[1]) for line in log.splitlines() if ", loss = " in line and "(" in line]
    resumed = params_of(one / "tiny_iter_8.caffemodel")
    assert losses and all(np.isfinite(losses))
    assert all(np.isfinite(v).all() for v in resumed.values())
    assert "Restoring previous solver status from" in log and "Iteration 4 (" in log  # it went on from iteration 4


def rank_pid(marker: str, rank: int, timeout: float = 60) -> int:
    """The pid of the rank whose command line holds ``marker`` (from /proc: PMI_RANK / OMPI_COMM_WORLD_RANK)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                if marker not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    continue
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in env or f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(proc.name)
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} did not start")


def test_killing_one_rank_ends_the_others_quickly(tmp_path):
    out = tmp_path / "killed_run"
    proc = mpirun(2, "--out", out, "--max-iter", 100000, "--snapshot-every", 0, cwd=tmp_path, wait=False)
    try:
        victim = rank_pid(str(out), 1)
        while not (out / "train.log").exists() or "Iteration 2" not in (out / "train.log").read_text():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        start = time.time()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and time.time() - start < 60
        assert "KILLED BY SIGNAL: 9" in err or "killed" in err.lower(), err[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_divergence_stops_every_rank_with_one_message(tmp_path):
    run = mpirun(2, "--out", tmp_path, "--max-iter", 50, "--base-lr", 1e30, "--clip-gradients", -1,
                 "--snapshot-every", 0, cwd=tmp_path, timeout=120)
    assert run.returncode != 0
    assert run.stderr.count("train.py: error: iteration") == 2, run.stderr[-3000:]  # both ranks, no hang
    assert "KILLED" not in run.stderr


def test_interrupting_mpirun_stops_every_rank_after_one_snapshot(tmp_path):
    out = tmp_path / "interrupted"
    proc = mpirun(2, "--out", out, "--max-iter", 100000, "--snapshot-every", 0, cwd=tmp_path, wait=False)
    try:
        while not (out / "train.log").exists() or "Iteration 5 (" not in (out / "train.log").read_text():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # mpiexec forwards it to every rank
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    snapshots = sorted(p.name for p in out.glob("*.caffemodel"))
    assert len(snapshots) == 1 and (out / snapshots[0].replace(".caffemodel", ".solverstate")).exists()
