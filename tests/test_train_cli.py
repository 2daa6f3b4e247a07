"""tools/train.py end to end on the golden MemNet training net and the tiny solver (subprocesses)."""
import datetime
import io
import json
import os
import re
import subprocess
import sys
from argparse import Namespace

import pytest

import memnet_engine as me
from conftest import FIXTURES, GOLDEN_FIXTURES, REPO, interrupt_after

TOOL = REPO / "tools" / "train.py"
GOLDEN_SOLVER = GOLDEN_FIXTURES / "memnet_m2r2_c8_solver.prototxt"
GOLDEN_NET = GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"
TINY_SOLVER = FIXTURES / "solver" / "tiny_solver.prototxt"


def run_tool(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def load_tool():
    from memnet_engine.cli import train
    return train


def parse_caffe_log(path):
    """What Caffe's tools/extra/parse_log.py extracts: its regexes and its glog timestamp parsing."""
    regex_iteration = re.compile(r"Iteration (\d+)")
    regex_train_output = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
    regex_learning_rate = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")

    def timestamp(line, year=2024):
        fields = line.strip().split()
        month, day = int(fields[0][1:3]), int(fields[0][3:])
        clock, micro = fields[1].rsplit(".", 1)
        hour, minute, second = (int(x) for x in clock.split(":"))
        return datetime.datetime(year, month, day, hour, minute, second, int(micro))

    lines = path.read_text().splitlines()
    start = next(timestamp(line) for line in lines if "Solving" in line)
    rows, iteration, lr = {}, -1, float("nan")
    for line in lines:
        found = regex_iteration.search(line)
        if found:
            iteration = int(found.group(1))
        if iteration == -1:
            continue
        seconds = (timestamp(line) - start).total_seconds()  # older parse_log.py fails on an undatable line
        found = regex_learning_rate.search(line)
        if found:
            lr = float(found.group(1))
        found = regex_train_output.search(line)
        if found:
            row = rows.setdefault(iteration, {"Seconds": seconds, "LearningRate": lr})
            row[found.group(2)] = float(found.group(3))
    return rows


def test_solver_file_training_leaves_snapshots_log_and_plot(tmp_path):
    """From Caffe's init weights, the logged losses are Caffe's (display 1, 4 iterations)."""
    out = tmp_path / "out"
    result = run_tool(GOLDEN_SOLVER, "--out", out, "--weights", GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["loss_curve.png", "memnet_m2r2_c8_iter_4.caffemodel", "memnet_m2r2_c8_iter_4.solverstate",
                     "train.log"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = me.caffe_pb2.SolverState()
    state.ParseFromString((out / "memnet_m2r2_c8_iter_4.solverstate").read_bytes())
    assert state.iter == 4 and state.learned_net == str(out / "memnet_m2r2_c8_iter_4.caffemodel")
    rows = parse_caffe_log(out / "train.log")
    reference = json.loads((GOLDEN_FIXTURES / "index.json").read_text())["memnet"][0]["losses"]
    assert sorted(rows) == [0, 1, 2, 3]
    for iteration, losses in enumerate(reference):
        for name, value in losses.items():
            assert rows[iteration][name] == pytest.approx(value, rel=1e-5)
    # the lr logged before iteration k's outputs is iteration k-1's (Caffe's order): step policy, gamma 0.5, stepsize 2
    assert [rows[i]["LearningRate"] for i in range(4)] == pytest.approx([float("nan"), 0.01, 0.01, 0.005],
                                                                          nan_ok=True)
    assert all(rows[i]["Seconds"] >= 0 for i in rows)
    assert "train.py: error" not in result.stderr


def test_net_prototxt_trains_with_memnets_released_solver(tmp_path):
    out = tmp_path / "out"
    result = run_tool(GOLDEN_NET, "--out", out, "--max-iter", 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "memnet_m2r2_c8_iter_3.solverstate").is_file()
    assert (out / "loss_curve.png").is_file()
    log = (out / "train.log").read_text()
    for setting in ("base_lr: 0.1", "momentum: 0.9", "weight_decay: 0.0001", 'lr_policy: "step"', "gamma: 0.1",
                    "stepsize: 200000", "clip_gradients: 0.01", "adjustable_clip: true", "snapshot: 10000",
                    "display: 10000"):
        assert setting in log
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ sgd_solver\.py:\d+\] Iteration 0, lr = 0\.1$", log, re.M)
    assert "Gradient clipping: scaling down gradients (L2 norm" in log and "> 0.1)" in log  # 0.01 / lr 0.1


def release_layout(tmp_path):
    """A checkout laid out as the MemNet release: caffe_files/<net>/ holding its solver text (the release's
    fields and values) and a train net (here the small golden M2R2, reading the golden HDF5 data)."""
    folder = tmp_path / "caffe_files" / "MemNet_M6R6_80C64"
    folder.mkdir(parents=True)
    net = GOLDEN_NET.read_text().replace('source: "memnet_m2r2_c8_train_list.txt"',
                                         f'source: "{GOLDEN_FIXTURES / "memnet_m2r2_c8_train_list.txt"}"')
    (folder / "MemNet_M6R6_80C64_train.prototxt").write_text(net)
    (folder / "MemNet_M6R6_80C64_solver.prototxt").write_text(
        'net: "./MemNet_M6R6_80C64_train.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nweight_decay: 0.0001\n'
        'lr_policy: "step"\ngamma: 0.1\nstepsize: 200000\nclip_gradients: 0.01\n\ndisplay: 10000\n'
        'max_iter: 20000000\nsnapshot: 10000\nsnapshot_prefix: "../../model/MemNet_M6R6_80C64"\nsolver_mode: GPU\n')
    return folder


@pytest.mark.parametrize("flags, clipping, threshold", [
    ([], "Caffe's stock clipping (the default for a solver file", "0.01"),
    (["--adjustable-clip"], "the MemNet release's adjustable clipping (--adjustable-clip)", "0.1"),
])
def test_the_releases_solver_file_clips_as_told_and_says_so(tmp_path, flags, clipping, threshold):
    """The release's own solver text: stock clipping by default (with a hint naming the flag), the release's
    clip_gradients / lr with --adjustable-clip; run from its folder as the release's train script does."""
    folder = release_layout(tmp_path)
    out = tmp_path / "out"
    result = run_tool("MemNet_M6R6_80C64_solver.prototxt", *flags, "--max-iter", 1, "--display", 1, "--out", out,
                      cwd=folder)
    assert result.returncode == 0, result.stderr
    log = (out / "train.log").read_text()
    assert f"Gradient clipping: {clipping}" in log and f"Gradient clipping: {clipping}" in result.stderr
    assert ("add --adjustable-clip to train as the release did" in log) == (not flags)
    assert re.search(rf"Gradient clipping: scaling down gradients \(L2 norm [\d.e+-]+ > {threshold}\)", log)
    assert (out / "MemNet_M6R6_80C64_iter_1.caffemodel").is_file()


@pytest.mark.parametrize("model, flags, adjustable, level, words", [
    (GOLDEN_SOLVER, [], False, "WARNING", "stock clipping (the default for a solver file"),
    (GOLDEN_SOLVER, ["--adjustable-clip"], True, "INFO", "adjustable clipping (--adjustable-clip): global L2 norm "
                                                        "clipped at clip_gradients / current lr (100 at the base lr"),
    (GOLDEN_NET, [], True, "INFO", "adjustable clipping (the release's solver)"),
    (GOLDEN_NET, ["--no-adjustable-clip"], False, "INFO", "stock clipping (--no-adjustable-clip): global L2 norm "
                                                          "clipped at 0.01 at every lr"),
    (GOLDEN_SOLVER, ["--clip-gradients", "-1"], False, "INFO", "off (clip_gradients -1 < 0)"),
])
def test_the_log_says_which_clipping_is_used(caplog, model, flags, adjustable, level, words):
    tool = load_tool()
    args = tool.parse_args([str(model), *flags])
    param, _ = tool.build_solver_param(args)
    with caplog.at_level("INFO", logger="memnet_engine.train"):
        tool.log_clipping(param, args)
    assert param.adjustable_clip == adjustable
    said = [r for r in caplog.records if r.getMessage().startswith("Gradient clipping: ")]
    assert len(said) == 1 and said[0].levelname == level and words in said[0].getMessage()


def test_a_solver_files_own_adjustable_clip_field_is_still_honoured(tmp_path, caplog):
    solver = tmp_path / "s.prototxt"
    solver.write_text(GOLDEN_SOLVER.read_text().replace('net: "', f'net: "{GOLDEN_FIXTURES}/') +
                      "adjustable_clip: true\n")
    tool = load_tool()
    args = tool.parse_args([str(solver)])
    param, _ = tool.build_solver_param(args)
    with caplog.at_level("INFO", logger="memnet_engine.train"):
        tool.log_clipping(param, args)
    assert param.adjustable_clip
    assert f"adjustable_clip: true in {solver}, a memnet-engine field that BVLC Caffe rejects" in caplog.text


def test_committed_m6r6_trains_from_a_clean_checkout_on_the_default_set(tmp_path):
    """The README's main job, shortened: no data on the machine, so the default set is built and used."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), MEMNET_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(TOOL), str(REPO / "prototxt" / "memnet_m6r6.prototxt"), "--out",
                             str(out), "--max-iter", "2", "--batch-size", "2", "--display", "1", "--no-preview"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "MemNet_M6R6_80C64_iter_2.caffemodel").is_file() and (out / "loss_curve.png").is_file()
    assert (tmp_path / "cache" / "default-sr-v2" / "train.txt").is_file()
    assert "using the built-in default SR set" in result.stderr
    assert re.search(r"Iteration 1 \(.*\), loss = [\d.]+", (out / "train.log").read_text())
    assert "2/2" in result.stderr  # the progress bar reached the end


def test_preview_restores_the_held_out_photo(tmp_path):
    out = tmp_path / "out"
    result = run_tool(GOLDEN_SOLVER, "--out", out, "--max-iter", 1, "--preview", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "preview_sr_x3.png").is_file()
    assert re.search(r"PSNR on Y, bicubic [\d.]+ dB, restored [\d.]+ dB", (out / "train.log").read_text())


def test_resume_with_snapshot_flag_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_tool(TINY_SOLVER, "--out", straight, "--max-iter", 6, cwd=tmp_path).returncode == 0
    assert run_tool(TINY_SOLVER, "--out", split, "--max-iter", 3, cwd=tmp_path).returncode == 0
    resumed = run_tool(TINY_SOLVER, "--out", split, "--max-iter", 6, "--snapshot", split / "tiny_iter_3.solverstate",
                       cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (split / "tiny_iter_6.caffemodel").read_bytes() == (straight / "tiny_iter_6.caffemodel").read_bytes()
    states = []
    for folder in (split, straight):
        state = me.caffe_pb2.SolverState()
        state.ParseFromString((folder / "tiny_iter_6.solverstate").read_bytes())
        assert state.learned_net == str(folder / "tiny_iter_6.caffemodel")
        state.ClearField("learned_net")
        states.append(state.SerializeToString())
    assert states[0] == states[1]
    log = (split / "train.log").read_text()
    assert "Resuming from" in log and log.count("Solving tiny") == 2
    rows = parse_caffe_log(split / "train.log")  # the appended log still parses, with both runs' iterations
    assert sorted(rows) == list(range(6))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_snapshots_stops_and_says_how_to_resume(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    returncode, _, err = interrupt_after([sys.executable, str(TOOL), str(TINY_SOLVER), "--out", str(out),
                                          "--max-iter", "100000", "--snapshot-every", "0"], "] Iteration 3 (",
                                         "stderr", cwd=tmp_path, env=env)
    assert returncode == 0, err
    stopped = re.search(r"stopped at iteration (\d+); resume with: --snapshot (\S+)", err)
    assert stopped and 3 <= int(stopped.group(1)) < 100000
    assert os.path.isfile(stopped.group(2)) and (out / "loss_curve.png").is_file()
    assert "Optimization stopped early." in (out / "train.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["missing.prototxt"], "missing.prototxt: cannot read"),
    (["bad.prototxt"], r"bad.prototxt is neither a solver nor a net prototxt"),
    ([str(TINY_SOLVER), "--base-lr", "1e20", "--clip-gradients", "-1"], r"iteration \d+: the loss is (nan|inf)"),
    ([str(TINY_SOLVER), "--snapshot", "nope.solverstate"], "nope.solverstate: cannot read .solverstate"),
    ([str(GOLDEN_NET), "--train-data", "no_list.txt", "--max-iter", "1"], "HDF5 source list '.*no_list.txt' not found"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    (tmp_path / "bad.prototxt").write_text("layer { name: 'x' type: }\n")
    result = run_tool(*args, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and re.search(message, last), result.stderr
    assert "Traceback" not in result.stderr


def test_conflicting_flags_are_usage_errors(tmp_path):
    result = run_tool(TINY_SOLVER, "--weights", "a.caffemodel", "--snapshot", "b.solverstate", cwd=tmp_path)
    assert result.returncode == 2 and "not both" in result.stderr


def test_prepare_training_data_overrides_train_phase_hdf5_layers():
    tool = load_tool()
    net = me.caffe_pb2.NetParameter()
    me.core.prototxt.parse_text("""
        layer { name: "train" type: "HDF5Data" top: "d" include { phase: TRAIN }
                hdf5_data_param { source: "a" batch_size: 2 } }
        layer { name: "test" type: "HDF5Data" top: "d" include { phase: TEST }
                hdf5_data_param { source: "b" batch_size: 2 } }
        """, net)
    assert not tool.prepare_training_data(net, Namespace(train_data="new_list.txt", batch_size=64))
    train, test = net.layer
    assert (train.hdf5_data_param.source, train.hdf5_data_param.batch_size) == (os.path.abspath("new_list.txt"), 64)
    assert (test.hdf5_data_param.source, test.hdf5_data_param.batch_size) == ("b", 2)
    with pytest.raises(me.MemnetError, match="layer 'train': training data list '.*new_list.txt' not found"):
        tool.prepare_training_data(net, Namespace(train_data=None, batch_size=None))
    with pytest.raises(me.MemnetError, match="no HDF5Data layer in the TRAIN phase"):
        tool.prepare_training_data(me.caffe_pb2.NetParameter(name="n"), Namespace(train_data="x", batch_size=None))


def test_missing_placeholder_source_gets_the_default_set(tmp_path, monkeypatch):
    tool = load_tool()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tool, "ensure_default_training_set", lambda: "/cache/default/train.txt")
    net = me.caffe_pb2.NetParameter()
    me.core.prototxt.parse_text('layer { name: "data" type: "HDF5Data" top: "data" '
                           'hdf5_data_param { source: "data/train_list.txt" batch_size: 2 } }', net)
    assert tool.prepare_training_data(net, Namespace(train_data=None, batch_size=None))
    assert net.layer[0].hdf5_data_param.source == "/cache/default/train.txt"


def test_batch_size_flag_reaches_the_net(tmp_path, monkeypatch):
    tool = load_tool()
    args = tool.parse_args([str(GOLDEN_NET), "--batch-size", "2", "--base-lr", "0.5", "--no-adjustable-clip"])
    param, uses_default = tool.build_solver_param(args)
    assert not uses_default
    assert param.net_param.layer[0].hdf5_data_param.batch_size == 2
    assert param.base_lr == pytest.approx(0.5) and not param.adjustable_clip and param.clip_gradients == \
        pytest.approx(0.01)
    # the data list was anchored next to the net, so the embedded net builds from any working directory
    monkeypatch.chdir(tmp_path)
    assert me.SGDSolver(param).net.blobs["data"].shape[0] == 2


GLOG_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] .*")


def console_lines(stderr):
    """The log lines the console showed, without the progress bar's redraws."""
    return [line for part in stderr.split("\n") for line in [part.split("\r")[-1]] if GLOG_LINE.fullmatch(line)]


def test_resume_below_the_total_is_an_error_that_explains_max_iter(tmp_path):
    out = tmp_path / "out"
    first = run_tool(TINY_SOLVER, "--out", out, "--max-iter", 3, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    log = (out / "train.log").read_text()
    shown = console_lines(first.stderr)
    assert len(shown) > 10 and all(line in log for line in shown)  # train.log holds every console line
    assert re.search(r"\] done: 3 iterations; snapshot \S+tiny_iter_3.solverstate", log)
    state = out / "tiny_iter_3.solverstate"
    for total, hint in ((2, "--max-iter 5 trains 2 more"), (3, "--max-iter 6 trains 3 more")):
        resumed = run_tool(TINY_SOLVER, "--out", out, "--max-iter", total, "--snapshot", state, cwd=tmp_path)
        assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
        last = resumed.stderr.strip().splitlines()[-1]
        assert last == (f"train.py: error: {state} is already at iteration 3, and --max-iter {total} counts all "
                        f"iterations, not how many more: nothing to train ({hint})")
        assert last.removeprefix("train.py: ") in (out / "train.log").read_text().splitlines()[-1]
    assert sorted(p.name for p in out.glob("*.caffemodel")) == ["tiny_iter_3.caffemodel"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_skips_the_preview(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    returncode, _, err = interrupt_after([sys.executable, str(TOOL), str(GOLDEN_SOLVER), "--out", str(out),
                                          "--max-iter", "100000", "--display", "1", "--preview"],
                                         "] Iteration 2 (", "stderr", cwd=tmp_path, env=env)
    assert returncode == 0, err
    assert "Stopped early: skipping the preview" in err and "Restoring a held-out photo" not in err
    assert not (out / "preview_sr_x3.png").exists()


def test_eta_leaves_out_start_up_and_the_first_iteration(monkeypatch):
    tool = load_tool()
    clock = iter([50.0, 52.0, 54.0, 55.0])  # the first iteration ends after 50 s, then 2 s, 2 s and 1 s
    monkeypatch.setattr(tool.time, "perf_counter", lambda: next(clock))
    bar = tool.IterationBar(total=100, file=io.StringIO(), window=2)
    bar.update(1)
    assert bar.format_dict["rate"] == 0.0 and "<?" in str(bar)  # unknown, not 100 x 50 s
    bar.update(1)
    bar.update(1)
    assert bar.format_dict["rate"] == pytest.approx(0.5) and "<03:14" in str(bar)  # 97 left at 2 s each
    bar.update(1)  # the window keeps the last 2 iterations: 2 s and 1 s
    assert bar.recent_rate() == pytest.approx(2 / 3)


def test_loss_curve_title_says_what_is_summed():
    net = me.Net(str(GOLDEN_NET), phase=me.TRAIN, weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel"))
    assert load_tool().loss_description(net) == "sum of the 3 supervised losses: loss_01, loss_02, loss_3"
