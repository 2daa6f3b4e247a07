"""The solver against the real Caffe: per-step losses, final weights and the .solverstate it wrote."""
import json
import os

import numpy as np

import memnet_engine as me
from conftest import GOLDEN_FIXTURES, shared_golden
from memnet_engine.core.gradcheck import scaled_error
from memnet_engine.core.solver.state import write_solver_state

TOL = 1e-4
M2R2 = "memnet_m2r2_c8"


def caffe_state(path) -> me.caffe_pb2.SolverState:
    state = me.caffe_pb2.SolverState()
    state.ParseFromString(open(path, "rb").read())
    return state


def history_of(state):
    return [np.asarray(h.data, np.float32).reshape(tuple(h.shape.dim)) for h in state.history]


def train_like_caffe(folder, case):
    """Run the case's solver (its paths resolve against the solver's folder) from the Caffe init."""
    name = case["name"]
    solver = me.SGDSolver(str(folder / f"{name}_solver.prototxt"))
    solver.net.copy_from(str(folder / f"{name}_init.caffemodel"))
    worst_loss = 0.0
    for ref in case["losses"]:
        solver.step(1)
        for blob, value in ref.items():
            got = float(solver.net.blobs[blob].data.reshape(-1)[0])
            worst_loss = max(worst_loss, scaled_error(got, value))
    return solver, worst_loss


def check_against_caffe(folder, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, iters = case["name"], case["iters"]
    solver, worst_loss = train_like_caffe(folder, case)
    assert worst_loss <= TOL
    assert solver.iter == iters
    ref_net = me.Net(str(folder / f"{name}_train.prototxt"), phase=me.TRAIN,
                     weights=str(folder / f"{name}_iter_{iters}.caffemodel"))
    for layer, blobs in ref_net.params.items():
        for i, blob in enumerate(blobs):
            assert scaled_error(solver.net.params[layer][i].data, blob.data) <= TOL, f"{layer}/{i}"
    ref_state = caffe_state(folder / f"{name}_iter_{iters}.solverstate")
    assert len(ref_state.history) == len(solver.history) == len(solver.net.learnable_params)
    for i, (ours, ref) in enumerate(zip(solver.history, history_of(ref_state))):
        assert scaled_error(ours, ref) <= TOL, f"history {i} ({solver.net.learnable_params[i].owner})"

    # our snapshot has Caffe's fields and layout
    solver.param.snapshot_prefix = name
    path = solver.snapshot()
    assert path == f"{name}_iter_{iters}.solverstate"
    ours = caffe_state(tmp_path / path)
    assert (ours.iter, ours.learned_net, ours.current_step) == \
        (ref_state.iter, ref_state.learned_net, ref_state.current_step)
    assert [tuple(h.shape.dim) for h in ours.history] == [tuple(h.shape.dim) for h in ref_state.history]
    assert os.path.getsize(tmp_path / path) == os.path.getsize(folder / f"{name}_iter_{iters}.solverstate")
    return solver


def test_m2r2_matches_caffe_losses_weights_and_solverstate(tmp_path, monkeypatch):
    case = json.loads((GOLDEN_FIXTURES / "index.json").read_text())["memnet"][0]
    assert case["name"] == M2R2
    solver = check_against_caffe(GOLDEN_FIXTURES, case, tmp_path, monkeypatch)
    z = np.load(GOLDEN_FIXTURES / f"{M2R2}.npz")
    for key in (k for k in z.files if k.startswith("final/param/")):
        layer, _, i = key[len("final/param/"):].rpartition("/")
        assert scaled_error(solver.net.params[layer][int(i)].data, z[key]) <= TOL, key


def test_m2r2_first_step_diffs_hold_caffes_update_values(monkeypatch):
    monkeypatch.chdir(GOLDEN_FIXTURES)
    solver = me.SGDSolver(f"{M2R2}_solver.prototxt")
    solver.net.copy_from(f"{M2R2}_init.caffemodel")
    solver.step(1)
    z = np.load(GOLDEN_FIXTURES / f"{M2R2}.npz")
    for key in (k for k in z.files if k.startswith("iter0/data/")):
        assert scaled_error(solver.net.blobs[key[len("iter0/data/"):]].data, z[key]) <= TOL, key


def test_solverstate_bytes_equal_caffes_for_the_same_values(tmp_path):
    """Writing Caffe's own values through our writer reproduces Caffe's file byte for byte."""
    path = GOLDEN_FIXTURES / f"{M2R2}_iter_4.solverstate"
    ref = caffe_state(path)
    ours = tmp_path / "s.solverstate"
    write_solver_state(str(ours), ref.iter, ref.learned_net, ref.current_step, history_of(ref))
    assert ours.read_bytes() == path.read_bytes()


def test_restore_reads_caffes_solverstate(monkeypatch):
    monkeypatch.chdir(GOLDEN_FIXTURES)
    solver = me.SGDSolver(f"{M2R2}_solver.prototxt")
    solver.restore(f"{M2R2}_iter_4.solverstate")
    ref = caffe_state(f"{M2R2}_iter_4.solverstate")
    assert (solver.iter, solver.current_step) == (4, 1)
    for ours, want in zip(solver.history, history_of(ref)):
        assert np.array_equal(ours, want)
    model = me.Net(f"{M2R2}_train.prototxt", phase=me.TRAIN, weights=f"{M2R2}_iter_4.caffemodel")
    for layer, blobs in model.params.items():
        for i, blob in enumerate(blobs):
            assert np.array_equal(solver.net.params[layer][i].data, blob.data)


def test_our_solverstate_round_trips_through_restore(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = me.SGDSolver(str(GOLDEN_FIXTURES / f"{M2R2}_solver.prototxt"))
    solver.net.copy_from(str(GOLDEN_FIXTURES / f"{M2R2}_init.caffemodel"))
    solver.param.snapshot_prefix = "snaps/m"
    solver.step(3)
    state_path = solver.snapshot()
    assert os.path.isfile("snaps/m_iter_3.caffemodel")
    monkeypatch.chdir(GOLDEN_FIXTURES)  # learned_net 'snaps/m_iter_3.caffemodel' is then found next to the state
    other = me.SGDSolver(f"{M2R2}_solver.prototxt")
    other.restore(str(tmp_path / state_path))
    assert (other.iter, other.current_step) == (3, 1)
    for a, b in zip(other.history, solver.history):
        assert np.array_equal(a, b)
    for a, b in zip(other.net.learnable_params, solver.net.learnable_params):
        assert np.array_equal(a.blob.data, b.blob.data)


def test_m6r6_matches_caffe_from_shared_golden(tmp_path, monkeypatch):
    folder = shared_golden()
    case = next(c for c in json.loads((folder / "index.json").read_text())["memnet"] if c["name"] == "memnet_m6r6_c64")
    check_against_caffe(folder, case, tmp_path, monkeypatch)
