"""Resuming from a snapshot in a new process repeats a straight run bit for bit (CPU)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES, REPO
from memnet_engine.core.solver.state import read_solver_state
from memnet_engine.core.weights import array_to_blob_proto

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


def snapshot_at(tmp_path, iterations=2):
    solver = me.SGDSolver(str(SOLVER))
    solver.param.snapshot_prefix = str(tmp_path / "tiny")
    solver.step(iterations)
    return solver.snapshot()


def rewrite_state(path, edit) -> str:
    state = read_solver_state(path)
    edit(state)
    with open(path, "wb") as f:  # as another tool would write it: no integrity field
        f.write(state.SerializeToString())
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: setattr(s, "iter", -3), r"negative iteration \(-3\) or lr step"),
    (lambda s: setattr(s, "current_step", -1), "negative iteration"),
    (lambda s: setattr(s, "iter", 2**31 - 1), "is at iteration 2147483647, past the solver's max_iter 8"),
])
def test_a_solverstate_with_impossible_counters_is_refused(tmp_path, monkeypatch, edit, message):
    monkeypatch.chdir(SOLVER.parent)
    path = rewrite_state(snapshot_at(tmp_path), edit)
    with pytest.raises(me.WeightsError, match=message):
        me.SGDSolver(str(SOLVER)).restore(path)


def test_a_solverstate_naming_a_non_utf8_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(SOLVER.parent)
    path = snapshot_at(tmp_path)
    body = read_solver_state(path)
    body.ClearField("learned_net")
    with open(path, "wb") as f:
        f.write(body.SerializeToString() + b"\x12\x03\xff\xfe\x80")  # learned_net = 3 bytes of invalid UTF-8
    with pytest.raises(me.WeightsError, match=r"weights file name b'\\xff\\xfe\\x80' is not UTF-8 text"):
        me.SGDSolver(str(SOLVER)).restore(path)


def test_a_solverstate_whose_weights_are_another_nets_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(SOLVER.parent)
    other = me.caffe_pb2.NetParameter(name="other")
    array_to_blob_proto(np.ones((2, 3), np.float32), other.layer.add(name="fc9", type="InnerProduct").blobs.add())
    (tmp_path / "other.caffemodel").write_bytes(other.SerializeToString())
    path = rewrite_state(snapshot_at(tmp_path), lambda s: setattr(s, "learned_net", str(tmp_path / "other.caffemodel")))
    solver = me.SGDSolver(str(SOLVER))
    before = [p.blob.data.copy() for p in solver.net.learnable_params]
    with pytest.raises(me.WeightsError,
                       match=r"other.caffemodel \(net 'other', 1 layers with weights\) has no layer of net 'tiny'"):
        solver.restore(path)
    assert all(np.array_equal(b, p.blob.data) for b, p in zip(before, solver.net.learnable_params))
    partial = me.caffe_pb2.NetParameter()  # the right net's weights, but not all of them
    partial.ParseFromString((tmp_path / "tiny_iter_2.caffemodel").read_bytes())
    del partial.layer[max(i for i, layer in enumerate(partial.layer) if layer.blobs)]
    (tmp_path / "partial.caffemodel").write_bytes(partial.SerializeToString())
    rewrite_state(path, lambda s: setattr(s, "learned_net", str(tmp_path / "partial.caffemodel")))
    with pytest.raises(me.WeightsError, match=r"partial.caffemodel has no weights for 1 layer\(s\) of net 'tiny'"):
        solver.restore(path)


def test_replaying_a_billion_iterations_reads_row_counts_not_data(tmp_path, monkeypatch):
    monkeypatch.chdir(SOLVER.parent)
    solver = me.SGDSolver(str(SOLVER))
    reads = []
    for net in [solver.net] + solver.test_nets:
        layer = net.layer_dict["data"]
        layer.shuffle = False  # unshuffled: whole passes over the files are skipped at once
        real_h5 = layer._h5
        monkeypatch.setattr(layer, "_h5", lambda path, read, real_h5=real_h5: reads.append(read) or real_h5(path, read))
    layer = solver.net.layer_dict["data"]
    position = (layer.current_file, layer.current_row)
    solver.replay_data(10**9)  # 3e9 rows: a loop over rows, or over passes reading the files, would not end
    assert reads and all(getattr(read, "__func__", None) is type(layer)._read_shapes for read in reads)  # no data
    rows = sum(layer._shapes(path)[0][0] for path in layer.files)
    assert (layer.current_file, layer.current_row) != position or (10**9 * layer.batch_size) % rows == 0
