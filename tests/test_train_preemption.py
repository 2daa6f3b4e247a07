"""tools/train.py on shared machines: SIGTERM and resume, logs kept, stale files, aborts, full disks, odd names."""
import errno
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

import memnet_engine as me
from conftest import FIXTURES, REPO
from test_train_cli import parse_caffe_log
from memnet_engine.cli import train as train_cli
from memnet_engine.core.solver.snapshot import snapshot_iterations
from memnet_engine.core.solver.state import read_solver_state

TOOL = REPO / "tools" / "train.py"
TINY_SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"
TINY_NET = FIXTURES / "solver" / "tiny_net.prototxt"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def env():
    return dict(os.environ, PYTHONPATH=str(REPO))


def run_tool(*args, cwd):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=300)


def signal_after(args, marker: str, signals, cwd, gap: float = 0.0):
    """Start tools/train.py, send ``signals`` (``gap`` seconds apart) once stderr shows ``marker``; (code, stderr)."""
    proc = subprocess.Popen([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                for i, sent in enumerate(signals):
                    if i:
                        time.sleep(gap)
                    proc.send_signal(sent)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, "".join(seen) + err


def net_outputs(path) -> dict:
    """Iteration -> the train net's outputs, as Caffe's parse_log.py reads them from a log."""
    return {i: {k: v for k, v in row.items() if k not in ("Seconds", "LearningRate")}
            for i, row in parse_caffe_log(path).items()}


def test_sigterm_snapshots_stops_and_the_resumed_run_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_tool(TINY_SOLVER, "--out", straight, "--max-iter", 40, cwd=tmp_path).returncode == 0
    code, err = signal_after([TINY_SOLVER, "--out", split, "--max-iter", 40, "--snapshot-every", 0],
                             "] Iteration 3 (", [signal.SIGTERM], tmp_path)
    assert code == 75, err  # stopped by a signal after a snapshot
    stopped = re.search(r"stopped by SIGTERM at iteration (\d+) after a snapshot; resume with: --snapshot (\S+)", err)
    assert stopped and "Traceback" not in err, err
    at, state = int(stopped.group(1)), stopped.group(2)
    assert 3 <= at < 40 and snapshot_iterations(str(split / "tiny")) == {at: {".caffemodel", ".solverstate"}}
    assert read_solver_state(state).iter == at
    resumed = run_tool(TINY_SOLVER, "--out", split, "--max-iter", 40, "--snapshot", state, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    log = (split / "train.log").read_text()
    assert f"Resumed from {state} at iteration {at}" in log
    assert net_outputs(split / "train.log") == net_outputs(straight / "train.log")  # both parts, the same losses
    assert sorted(net_outputs(split / "train.log")) == list(range(40))
    assert (split / "tiny_iter_40.caffemodel").read_bytes() == (straight / "tiny_iter_40.caffemodel").read_bytes()


@pytest.mark.parametrize("gap", [0.05, 0.5])  # the report's tracebacks (50 ms) and KeyError / false message (0.5 s)
def test_a_second_signal_aborts_with_a_true_one_line_message(tmp_path, gap):
    out = tmp_path / "out"
    code, err = signal_after([TINY_SOLVER, "--out", out, "--max-iter", 100000, "--snapshot-every", 0],
                             "] Iteration 3 (", [signal.SIGINT, signal.SIGINT], tmp_path, gap=gap)
    assert "Traceback" not in err and "Error" not in err, err
    last = err.strip().splitlines()[-1]
    if code == 130:  # aborted: the message says whether the stop's snapshot was written, truthfully
        pairs = [i for i, found in snapshot_iterations(str(out / "tiny")).items() if len(found) == 2]
        expected = (f"the newest snapshot is {out}/tiny_iter_{max(pairs)}.solverstate" if pairs
                    else "no snapshot was written")
        assert re.fullmatch(r"train\.py: aborted \(SIGINT\) at iteration \d+; " + re.escape(expected) + ".*", last), err
    else:  # the stop finished before the second signal arrived (-SIGINT: it came as the interpreter exited)
        stopped = re.search(r"stopped by SIGINT at iteration (\d+) after a snapshot", err)
        assert code in (75, -signal.SIGINT) and stopped, err
        assert snapshot_iterations(str(out / "tiny"))[int(stopped.group(1))] == {".caffemodel", ".solverstate"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_during_start_up_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the solver is being built (where SIGINT raises KeyboardInterrupt) ends with one line.
    Raised from the solver's construction, not sent after a sleep: a fast machine is past start-up by then."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(me, "SGDSolver", interrupted)
    code = train_cli.main([str(TINY_SOLVER), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (1, 130), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert re.search(r"train\.py: interrupted( \(SIGINT\))? during start-up: nothing was trained", err), err


def test_sigterm_with_effect_none_is_ignored_and_sighup_snapshots(tmp_path):
    out = tmp_path / "out"
    code, err = signal_after([TINY_SOLVER, "--out", out, "--max-iter", 400, "--snapshot-every", 0,
                              "--sigterm-effect", "none"], "] Iteration 3 (", [signal.SIGTERM, signal.SIGHUP],
                             tmp_path, gap=0.1)
    assert code == 0, err
    assert "SIGTERM ignored (its effect is none)" in err and "SIGHUP: snapshotting after this iteration" in err
    assert len(snapshot_iterations(str(out / "tiny"))) == 2  # SIGHUP's and the final one


def test_signal_effect_flags_reach_the_solver_in_caffes_spelling_too(tmp_path, monkeypatch):
    seen = {}
    solve = me.SGDSolver.solve
    monkeypatch.setattr(me.SGDSolver, "solve", lambda self: seen.update(self.signal_effects) or solve(self))
    assert train_cli.main([str(TINY_SOLVER), "--out", str(tmp_path / "out"), "--max-iter", "1", "-sigint_effect",
                           "none", "--sigterm-effect", "snapshot", "-sighup_effect", "stop"]) == 0
    assert seen == {"SIGINT": "none", "SIGTERM": "snapshot", "SIGUSR1": "stop", "SIGHUP": "stop"}


def test_the_next_start_removes_stale_temporary_files_and_completes_a_pair(tmp_path):
    out = tmp_path / "out"
    assert run_tool(TINY_SOLVER, "--out", out, "--max-iter", 2, cwd=tmp_path).returncode == 0
    (out / ".loss_curve.k2x9_abc.tmp.png").write_bytes(b"half a png")  # left by kill -9 while drawing
    model = out / "tiny_iter_2.caffemodel"
    state = out / "tiny_iter_2.solverstate"
    os.replace(state, out / ".tiny_iter_2.qqqqqqqq.tmp.solverstate")  # killed between the pair's renames
    resumed = run_tool(TINY_SOLVER, "--out", out, "--max-iter", 3, "--snapshot", state, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Completed the snapshot pair of" in resumed.stderr and model.is_file() and state.is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_keep_snapshots_keeps_the_newest_pairs(tmp_path):
    out = tmp_path / "out"
    result = run_tool(TINY_SOLVER, "--out", out, "--max-iter", 5, "--snapshot-every", 1, "--keep-snapshots", 2,
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(snapshot_iterations(str(out / "tiny"))) == [4, 5]


@pytest.mark.parametrize("field, value", [("name", "../../escaped"), ("name", "/abs/escaped"),
                                          ("snapshot_prefix", "../../escaped/y")])
def test_names_from_files_cannot_write_outside_runs(tmp_path, field, value):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    net = TINY_NET.read_text().replace('source: "tiny_list.txt"', f'source: "{FIXTURES / "solver" / "tiny_list.txt"}"')
    solver = TINY_SOLVER.read_text()
    if field == "name":
        net = net.replace('name: "tiny"', f'name: "{value}"', 1)
    else:
        solver = solver.replace('snapshot_prefix: "tiny"', f'snapshot_prefix: "{value}"')
    assert f'{field}: "{value}"' in net + solver
    (work / "tiny_net.prototxt").write_text(net)
    (work / "solver.prototxt").write_text(solver)
    result = run_tool("solver.prototxt", "--max-iter", 1, cwd=work)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(path.startswith("a/b/runs/") or path.endswith(".prototxt") for path in written), written
    assert not os.path.exists("/abs/escaped") and any(path.endswith("_iter_1.solverstate") for path in written)


def test_a_full_disk_for_train_log_stops_once_after_a_snapshot(tmp_path, monkeypatch, capsys):
    from memnet_engine.cli import train

    class FillingLog:
        """train.log on a disk that fills after 40 lines."""

        def __init__(self):
            self.lines = 0

        def write(self, text):
            self.lines += 1
            if self.lines > 40:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(train.LogFile, "_open", lambda self: FillingLog())
    monkeypatch.chdir(FIXTURES / "solver")
    code = train.main([str(TINY_SOLVER), "--out", str(tmp_path / "out"), "--max-iter", "1000", "--snapshot-every", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Logging error" not in err and "Traceback" not in err
    stop = re.search(r"train\.py: error: cannot write \S+train\.log: No space left on device: training stopped at "
                     r"iteration (\d+); the newest snapshot is (\S+) ", err)
    assert stop and int(stop.group(1)) < 1000, err
    assert read_solver_state(stop.group(2)).iter == int(stop.group(1))


def test_a_full_disk_during_a_snapshot_names_the_file_and_keeps_the_previous_pair(tmp_path, monkeypatch, capsys):
    from memnet_engine.core.solver import snapshot

    real_write = snapshot._write_file

    def full_at_iteration_4(path, data):
        if "_iter_4." in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(snapshot, "_write_file", full_at_iteration_4)
    monkeypatch.chdir(FIXTURES / "solver")
    out = tmp_path / "out"
    code = train_cli.main([str(TINY_SOLVER), "--out", str(out), "--max-iter", "8", "--snapshot-every", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    folder = re.escape(str(out))
    assert re.search(rf"train\.py: error: cannot write snapshot {folder}/tiny_iter_4\.caffemodel: No space left on "
                     r"device \(the pair needs .*\(\d+ bytes\); .* free in .*\); the previous snapshots are intact; "
                     rf"the newest snapshot is {folder}/tiny_iter_2\.solverstate", err), err
    assert sorted(p.name for p in out.iterdir() if "_iter_" in p.name) == ["tiny_iter_2.caffemodel",
                                                                            "tiny_iter_2.solverstate"]


def test_kill_9_leaves_whole_pairs_and_the_next_start_removes_temporary_files(tmp_path):
    """Two kills at random moments of a run that snapshots and draws its plot at every iteration, then a start."""
    out, rng, args = tmp_path / "out", random.Random(14), []
    for _ in range(2):
        command = [TOOL, TINY_SOLVER, "--out", out, "--max-iter", 100000, "--snapshot-every", 1, "--plot-every", 0]
        proc = subprocess.Popen([sys.executable, *map(str, command + args)], cwd=tmp_path, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "Iteration 2 (" in line:  # iteration 1's pair is whole
                break
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
        pairs = snapshot_iterations(str(out / "tiny"))
        args = ["--snapshot", out / f"tiny_iter_{max(pairs)}.solverstate"]  # the next trial resumes
    resumed = run_tool(TINY_SOLVER, "--out", out, "--max-iter", max(pairs) + 1, *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(found == {".caffemodel", ".solverstate"} for found in snapshot_iterations(str(out / "tiny")).values())
