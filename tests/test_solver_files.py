"""Solver files and nets: path resolution, Caffe's upgrades, test nets, NetState merging, bad settings."""
import logging
import os
import shutil

import numpy as np
import pytest

import memnet_engine as me
from conftest import FIXTURES
from memnet_engine.core.solver import read_solver

TINY = FIXTURES / "solver"


@pytest.fixture
def tiny_copy(tmp_path):
    """The tiny solver and net in a folder of their own (the data stays where it is)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("tiny_net.prototxt", "tiny_list.txt", "tiny_a.h5", "tiny_b.h5"):
        shutil.copy(TINY / name, folder / name)
    return folder


def write_solver(folder, text: str):
    path = folder / "solver.prototxt"
    path.write_text(text)
    return path


def test_net_path_is_found_next_to_the_solver(tiny_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    solver = me.SGDSolver(str(path))
    assert solver.param.net == str(tiny_copy / "tiny_net.prototxt")
    assert solver.net.name == "tiny"
    # Caffe's rule first: a path that exists from the working directory is used as given
    (tmp_path / "tiny_net.prototxt").write_text((tiny_copy / "tiny_net.prototxt").read_text().replace(
        'name: "tiny"', 'name: "from_cwd"').replace('source: "tiny_list.txt"', f'source: "{tiny_copy}/tiny_list.txt"'))
    assert me.SGDSolver(str(path)).net.name == "from_cwd"


def test_snapshot_prefix_upgrades(tiny_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    assert read_solver(path).snapshot_prefix == str(tiny_copy / "solver")
    (tmp_path / "snaps").mkdir()
    path.write_text('net: "tiny_net.prototxt" snapshot_prefix: "snaps" lr_policy: "fixed"')
    assert read_solver(path).snapshot_prefix == os.path.join("snaps", "solver")
    path.write_text('net: "tiny_net.prototxt" snapshot_prefix: "snaps/run1" lr_policy: "fixed"')
    assert read_solver(path).snapshot_prefix == "snaps/run1"


def test_given_a_solver_parameter_the_prefix_defaults_to_the_net_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    param = me.caffe_pb2.SolverParameter(net=str(TINY / "tiny_net.prototxt"), lr_policy="fixed", max_iter=1)
    solver = me.SGDSolver(param)
    solver.solve()
    assert (tmp_path / "tiny_iter_1.solverstate").is_file()


@pytest.mark.parametrize("text, message", [
    ('base_lr: 0.1 lr_policy: "fixed"', "exactly one train net .* gives none"),
    ('net: "tiny_net.prototxt" train_net: "tiny_net.prototxt" lr_policy: "fixed"', "gives net, train_net"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" solver_type: ADAM', "solver type 'Adam' is not supported"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" type: "Nesterov"', "solver type 'Nesterov' is not supported"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" average_loss: 0', "average_loss must be at least 1"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" regularization_type: "L3"', "unknown regularization_type 'L3'"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" snapshot_format: HDF5', "snapshot_format HDF5 is not supported"),
    ('net: "tiny_net.prototxt" lr_policy: "warmup"', "unknown lr_policy 'warmup'"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" test_iter: 1', "test nets need test_interval > 0"),
    ('train_net: "tiny_net.prototxt" test_net: "tiny_net.prototxt" lr_policy: "fixed"',
     r"test_iter must be given once per test net \(1 test nets, 0 test_iter values\)"),
    ('net: "tiny_net.prototxt" lr_policy: "fixed" bogus: 1', r"solver.prototxt:1:\d+: .*bogus"),
])
def test_bad_solver_files_are_clear_errors(tiny_copy, text, message):
    with pytest.raises(me.MemnetError, match=message):
        me.SGDSolver(str(write_solver(tiny_copy, text)))


def test_generic_test_nets_share_the_trained_weights_and_run_on_schedule(tiny_copy, caplog):
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" test_iter: 2 test_iter: 1 test_interval: 2 '
                                   'base_lr: 0.01 lr_policy: "fixed" clip_gradients: 1')
    solver = me.SGDSolver(str(path))
    assert len(solver.test_nets) == 2 and all(n.phase == me.TEST for n in solver.test_nets)
    for test_net in solver.test_nets:
        for layer, blobs in test_net.params.items():
            assert all(a is b for a, b in zip(blobs, solver.net.params[layer]))
    with caplog.at_level(logging.INFO, logger="memnet_engine.core.solver"):
        solver.step(5)
    tested = [r.getMessage() for r in caplog.records if "Testing net" in r.getMessage()]
    assert tested == [f"Iteration {i}, Testing net (#{k})" for i in (0, 2, 4) for k in (0, 1)]


def test_test_reports_the_mean_of_each_output(tiny_copy):
    net = tiny_copy / "tiny_net.prototxt"
    net.write_text(net.read_text().replace("shuffle: true", "shuffle: false"))
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" test_iter: 3 test_interval: 100 '
                                   'test_initialization: false base_lr: 0.01 lr_policy: "fixed"')
    solver = me.SGDSolver(str(path))
    reference = me.Net(str(tiny_copy / "tiny_net.prototxt"), phase=me.TEST)
    reference.share_weights_with(solver.net)
    outputs = [{k: float(v) for k, v in reference.forward().items()} for _ in range(3)]
    means = solver.test(0)
    for name in ("loss_1", "loss_2"):
        assert means[name] == pytest.approx(np.mean([o[name] for o in outputs]), rel=1e-6)


def test_test_initialization_false_skips_iteration_zero(tiny_copy, caplog):
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" test_iter: 1 test_interval: 2 '
                                   'test_initialization: false base_lr: 0.01 lr_policy: "fixed"')
    with caplog.at_level(logging.INFO, logger="memnet_engine.core.solver"):
        me.SGDSolver(str(path)).step(3)
    assert [r.getMessage() for r in caplog.records if "Testing net" in r.getMessage()] == \
        ["Iteration 2, Testing net (#0)"]


def test_train_state_merges_over_the_net_state(tiny_copy):
    net_text = (tiny_copy / "tiny_net.prototxt").read_text() + \
        'layer { name: "extra" type: "ReLU" bottom: "conv2" top: "extra" include { stage: "deep" } }\n'
    (tiny_copy / "tiny_net.prototxt").write_text(net_text)
    plain = write_solver(tiny_copy, 'net: "tiny_net.prototxt" lr_policy: "fixed"')
    assert "extra" not in me.SGDSolver(str(plain)).net.layer_dict
    staged = write_solver(tiny_copy, 'net: "tiny_net.prototxt" lr_policy: "fixed" train_state { stage: "deep" }')
    assert "extra" in me.SGDSolver(str(staged)).net.layer_dict


def test_weights_field_fine_tunes_from_caffemodels(tiny_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = me.SGDSolver(str(write_solver(tiny_copy, 'net: "tiny_net.prototxt" lr_policy: "fixed"')))
    source.net.save("start.caffemodel")
    path = write_solver(tiny_copy, 'net: "tiny_net.prototxt" lr_policy: "fixed" weights: "start.caffemodel"')
    tuned = me.SGDSolver(str(path))
    for a, b in zip(tuned.net.learnable_params, source.net.learnable_params):
        assert np.array_equal(a.blob.data, b.blob.data)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_snapshot_prefix_fails_before_training(tiny_copy, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    path = write_solver(tiny_copy, f'net: "tiny_net.prototxt" lr_policy: "fixed" snapshot: 10 '
                                   f'snapshot_prefix: "{locked}/sub/x"')
    with pytest.raises(me.MemnetError, match="cannot write snapshots"):
        me.SGDSolver(str(path))


def test_snapshot_prefix_under_a_file_fails_before_training(tiny_copy, tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    path = write_solver(tiny_copy, f'net: "tiny_net.prototxt" lr_policy: "fixed" snapshot: 10 '
                                   f'snapshot_prefix: "{tmp_path}/plain/sub/x"')
    with pytest.raises(me.MemnetError, match="plain is not a folder"):
        me.SGDSolver(str(path))
