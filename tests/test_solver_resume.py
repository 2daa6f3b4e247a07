"""Resuming from a snapshot in a new process repeats a straight run bit for bit (CPU)."""
import os
import subprocess
import sys

import pytest

import memnet_engine as me
from conftest import FIXTURES, REPO

SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"

RESUME = """
import sys
import memnet_engine as me
solver = me.SGDSolver(sys.argv[1])
solver.restore(sys.argv[2])
solver.step(int(sys.argv[3]) - solver.iter)
solver.snapshot()
"""


def run_in(folder, iterations: int, snapshot_at=()) -> me.SGDSolver:
    """A fresh solver (seeded) trained from its own random init in ``folder``."""
    os.chdir(folder)
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot = 0
    done = 0
    for k in list(snapshot_at) + [iterations]:
        solver.step(k - done)
        solver.snapshot()
        done = k
    return solver


def test_resume_in_a_new_process_is_bit_identical(tmp_path, monkeypatch):
    """Shuffled two-file data, a test net, iter_size 2, multistep lr: 8 straight == 3 + restore + 5."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir()
    split.mkdir()
    monkeypatch.chdir(tmp_path)
    run_in(straight, 8)
    run_in(split, 3)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", RESUME, str(SOLVER), "tiny_iter_3.solverstate", "8"], cwd=split,
                   env=env, check=True, capture_output=True, timeout=120)
    for ext in (".caffemodel", ".solverstate"):
        assert (split / f"tiny_iter_8{ext}").read_bytes() == (straight / f"tiny_iter_8{ext}").read_bytes(), ext


def test_resume_without_the_data_replay_would_differ(tmp_path, monkeypatch):
    """Guards the test above: the data cursor matters, so skipping it changes the result."""
    monkeypatch.chdir(tmp_path)
    reference = run_in(tmp_path, 6)
    resumed = run_in(tmp_path, 3)
    fresh = me.SGDSolver(str(SOLVER))
    monkeypatch.setattr(fresh, "replay_data", lambda iterations: None)
    fresh.restore("tiny_iter_3.solverstate")
    fresh.step(3)
    assert resumed.iter == 3
    differs = any((a.blob.data != b.blob.data).any()
                  for a, b in zip(fresh.net.learnable_params, reference.net.learnable_params))
    assert differs


def test_skip_batches_matches_forward_passes():
    """HDF5Data.skip_batches(n) leaves the layer (and the shuffling RNG) where n forwards leave it."""
    def after(advance):
        me.set_random_seed(11)
        net = me.Net(str(FIXTURES / "solver" / "tiny_net.prototxt"), phase=me.TRAIN)
        advance(net)
        rng_state = me.core.fillers.rng().bit_generator.state
        batches = []
        for _ in range(4):
            net.forward_range(0, 0)
            batches.append(net.blobs["data"].data.copy())
        return rng_state, batches

    def walk(net):
        for _ in range(7):  # 21 rows over files of 5 and 4 rows: several reloads and reshuffles
            net.forward_range(0, 0)

    walked_state, walked = after(walk)
    skipped_state, skipped = after(lambda net: net.layer_dict["data"].skip_batches(7))
    assert walked_state == skipped_state
    assert all((a == b).all() for a, b in zip(walked, skipped))
    _, unmoved = after(lambda net: None)
    assert not all((a == b).all() for a, b in zip(walked, unmoved))


def test_restore_rejects_a_state_for_another_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_in(tmp_path, 1)
    golden = FIXTURES / "golden"
    solver = me.SGDSolver(str(golden / "memnet_m2r2_c8_solver.prototxt"))
    with pytest.raises(me.WeightsError, match=r"holds 11 history blobs but the net has 83 learnable parameters"):
        solver.restore("tiny_iter_1.solverstate")
    with pytest.raises(me.WeightsError, match="cannot read .solverstate"):
        solver.restore("missing.solverstate")
    (tmp_path / "bad.solverstate").write_bytes(b"\xff\xff\xff")
    with pytest.raises(me.WeightsError, match="truncated or corrupt"):
        solver.restore("bad.solverstate")
