#!/usr/bin/env python3
"""One command that proves memnet-engine's GPU path on a real GPU and writes a report.

  benchmarks/gpu_suite.sh             # NVIDIA GPU with CuPy and PyTorch installed; no network, no install
  benchmarks/gpu_suite.sh --emulate   # the same stages on the CPU kernel emulator at small sizes (CI runs it)

Stages, each in its own process with a wall-clock budget; every stage runs whatever failed before it:
  environment     versions (GPU, driver, CUDA, NVRTC, CuPy, PyTorch, NumPy...); the package importable from
                  this checkout (PYTHONPATH, nothing installed); its dependencies present
  kernels         every kernel of kernels/*.cu compiled through the engine's loader (NVRTC); compiler logs
  pytest          pytest -m gpu tests/gpu on the CUDA backend, each test limited to --test-timeout seconds
                  (a hung test is ended with a traceback and the remaining tests run in a new process)
  golden          golden_check.py units / deploy / solver --device gpu against the real Caffe's data
                  (.gpu_data/golden when copied there by benchmarks/gpu_data.sh, with the full-width M6R6
                  case; else tests/fixtures/golden)
  benchmark       bench_memnet.py: M6R6 C64 training step (batch 64 of 31x31) and inference of 288x288 and
                  1024x1024 images, memnet-engine vs PyTorch (cuDNN, FP32, TF32 off)
  benchmark-tf32  the same with TF32 on both sides, when the engine has its opt-in TF32 mode and time is left
Writes $OUT/report.md, $OUT/report.json and $OUT/suite.log ($OUT: --out, else the OUT variable, else
./gpu_report), rewritten after every stage; exit status 1 if any stage failed.  The stage budgets add up
to at most --budget seconds (default 345: the suite fits twice in a 15-minute GPU lease).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_report import console_summary, markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PASS, FAIL, SKIP = "pass", "fail", "skip"
LOG_LIMIT = 12_000_000  # characters of suite.log
# The emulated pytest stage proves the stage works (CI runs every emulated GPU test anyway): a fast subset.
EMULATED_TESTS = ["tests/gpu/test_gpu_golden.py", "tests/gpu/test_emulator.py", "-k", "emulated and not shared"]
BENCH_GPU = ["--device", "gpu", "--batch", "64", "--patch", "31", "--size", "288", "1024", "--iters", "10",
             "--warmup", "2", "--time-limit", "6"]
BENCH_EMULATED = ["--device", "gpu", "--batch", "2", "--patch", "9", "--size", "12", "16", "--blocks", "2",
                  "--recursions", "1", "--channels", "4", "--iters", "1", "--warmup", "1", "--gemm-size", "64"]


@dataclass
class Result:
    status: str
    summary: str
    details: dict = field(default_factory=dict)
    seconds: float = 0.0
    budget: float = 0.0


@dataclass
class Completed:
    """A finished command: exit status (None when stopped at its time limit), output, seconds."""

    returncode: "int | None"
    output: str
    seconds: float


@dataclass
class Stage:
    name: str
    cap: float  # seconds it may take at most
    floor: float  # seconds it needs to be worth starting
    run: Callable[["Suite", float], Result]
    optional: bool = False


class Suite:
    """Runs the stages in order within the overall budget and keeps the report up to date in ``out``."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.emulate = args.emulate
        self.out = Path(args.out)
        self.work = Path(tempfile.mkdtemp(prefix="memnet-gpu-suite-"))
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.results: dict[str, Result] = {}
        self.log: list[str] = []
        path = os.pathsep.join([str(REPO), str(BENCH)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        self.meta = {"suite": "memnet-engine GPU suite", "mode": "emulate" if self.emulate else "cuda",
                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": args.budget,
                     "command": " ".join(sys.argv), "repo": str(REPO), "out": str(self.out)}

    # ------------------------------------------------------------------ running
    def python(self, script: Path, *args: str, emulated: bool = False) -> list[str]:
        """The command running ``script``; with ``emulated`` (in --emulate mode) under the kernel emulator."""
        wrapper = [str(BENCH / "run_emulated.py")] if emulated and self.emulate else []
        return [sys.executable, *wrapper, str(script), *map(str, args)]

    def command(self, argv: list[str], timeout: float, label: str) -> Completed:
        """Run ``argv`` from the repository root, its output to a file; stop its whole process group at
        ``timeout`` seconds (SIGTERM, then SIGKILL), or when the suite itself is stopped.  The group stays
        in the suite's session, so whoever ends the suite's session ends it too."""
        print(f"[suite]   {label}: {' '.join(argv)}", flush=True)
        log = self.work / f"{len(self.log):02d}.log"
        start = time.monotonic()
        with open(log, "wb") as sink:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
            try:
                returncode = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                returncode = None
                _stop_group(proc)
            except BaseException:  # SIGTERM / Ctrl-C of the suite: take the stage's processes along
                _stop_group(proc)
                raise
        output = log.read_text(encoding="utf-8", errors="replace")
        seconds = time.monotonic() - start
        status = f"exit {returncode}" if returncode is not None else f"STOPPED after {timeout:.0f} s (time limit)"
        self.log.append(f"===== {label}: {' '.join(argv)}\n===== {status}, {seconds:.1f} s\n{_tail(output, 1_000_000)}")
        return Completed(returncode, output, seconds)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, stages: list[Stage]) -> bool:
        for i, stage in enumerate(stages):
            reserve = sum(s.floor for s in stages[i + 1:] if not s.optional)
            budget = min(stage.cap, self.remaining() - reserve)
            if stage.optional and budget < stage.floor:
                result = Result(SKIP, f"skipped: {budget:.0f} s left for it, needs {stage.floor:.0f}")
            elif self.remaining() < 5:
                result = Result(FAIL, "not run: the suite's time budget is spent")
            else:
                budget = max(budget, min(stage.floor, self.remaining()))
                print(f"[suite] {stage.name} (up to {budget:.0f} s)", flush=True)
                start = time.monotonic()
                try:
                    result = stage.run(self, budget)
                except Exception as ex:  # a bug in one stage must not cost the others their report
                    result = Result(FAIL, f"the suite's {stage.name} stage crashed: {type(ex).__name__}: {ex}")
                result.seconds, result.budget = round(time.monotonic() - start, 1), round(budget)
            self.results[stage.name] = result
            print(f"[suite] {stage.name}: {result.status.upper()} ({result.seconds:.0f} s) {result.summary}", flush=True)
            self.write()
        return all(r.status != FAIL for r in self.results.values())

    # ------------------------------------------------------------------ report
    def report(self) -> dict:
        ok = all(r.status != FAIL for r in self.results.values()) and "stopped" not in self.meta
        return {**self.meta, "ok": ok, "wall_s": round(time.monotonic() - self.started, 1),
                "stages": {name: asdict(r) for name, r in self.results.items()}}

    def write(self) -> None:
        """report.json, report.md and suite.log (at most LOG_LIMIT characters: the device returns files
        of 16 MiB at most); a report that cannot be rendered still leaves report.json."""
        report = self.report()
        self.out.mkdir(parents=True, exist_ok=True)
        _write(self.out / "report.json", json.dumps(report, indent=1, default=str))
        try:
            text = markdown(report)
        except Exception as ex:  # the figures are in report.json whatever the renderer trips on
            text = f"# {report['suite']}: ok={report['ok']}\n\nreport.md could not be rendered ({ex!r}): see report.json\n"
        _write(self.out / "report.md", text)
        _write(self.out / "suite.log", _tail("\n".join(self.log), LOG_LIMIT))


def _stop_group(proc: subprocess.Popen) -> None:
    """End the process group the suite started for ``proc`` (its own session), politely first."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"[... {len(text) - limit} characters left out ...]\n" + text[-limit:]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> "dict | None":
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- stages
def probe_stage(what: str) -> Callable[[Suite, float], Result]:
    """The environment or kernels stage: benchmarks/suite_probe.py in its own process."""
    def run(suite: Suite, budget: float) -> Result:
        found = suite.work / f"{what}.json"
        done = suite.command(suite.python(BENCH / "suite_probe.py", what, "--json", found,
                                          *(["--emulate"] if suite.emulate else [])), budget, what)
        data = _read_json(found) or {}
        facts, problems = data.get("facts", {}), data.get("problems", [])
        if done.returncode is None:
            problems.append(f"stopped after {budget:.0f} s")
        elif not data:
            problems.append(f"the probe gave no findings (exit {done.returncode}): {done.output.strip()[-600:]}")
        summary = "; ".join(problems) if problems else (
            _environment_line(facts) if what == "environment" else f"{len(facts)} kernel families compiled")
        return Result(FAIL if problems or done.returncode else PASS, summary, {"facts": facts, "problems": problems})
    return run


def _environment_line(facts: dict) -> str:
    def get(section: str, key: str) -> str:
        value = facts.get(section)
        value = value.get(key, "?") if isinstance(value, dict) else "?"
        return "n/a" if str(value).startswith("unavailable") else str(value)[:40]

    return (f"{get('cupy', 'device')} | driver {get('cupy', 'driver_version')}, CUDA runtime "
            f"{get('cupy', 'runtime_version')}, NVRTC {get('cupy', 'nvrtc_version')} | CuPy {get('cupy', 'version')} "
            f"| PyTorch {get('torch', 'version')} (CUDA {get('torch', 'cuda')})")


def pytest_stage(suite: Suite, budget: float) -> Result:
    """pytest with the suite's plugin; after a hung or crashed test, again without the tests already run."""
    results, deselect = suite.work / "pytest.jsonl", suite.work / "pytest-deselect.txt"
    deselect.write_text("")
    selection = EMULATED_TESTS if suite.emulate else ["-m", "gpu", "tests/gpu"]
    argv = [sys.executable, "-m", "pytest", *selection, "-p", "suite_pytest_plugin", "-p", "no:cacheprovider",
            "-q", "-o", "faulthandler_timeout=0", "--suite-results", str(results),
            "--suite-test-timeout", str(suite.args.test_timeout), "--suite-deselect", str(deselect)]
    stop = time.monotonic() + budget
    outcomes: dict[str, dict] = {}
    collected, attempts, exits = None, 0, []
    while time.monotonic() < stop - 3:
        attempts += 1
        done = suite.command(argv, stop - time.monotonic(), f"pytest (run {attempts})")
        exits.append(done.returncode)
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] \
            if results.exists() else []
        results.write_text("")
        started = [r["nodeid"] for r in records if r["event"] == "start"]
        for r in records:
            if r["event"] == "collected" and collected is None:
                collected = r["count"]
            elif r["event"] == "end":
                outcomes[r["nodeid"]] = r
        unfinished = [n for n in started if n not in outcomes]
        hang = Path(f"{results}.hang.txt")
        for nodeid in unfinished:
            why = "stopped with the stage (its time ran out)" if done.returncode is None else \
                f"no result: over the {suite.args.test_timeout:g} s limit, or the process died"
            outcomes[nodeid] = {"nodeid": nodeid, "outcome": "timeout", "message": why + "\n" + _hang_text(hang, nodeid)}
        if done.returncode not in (None, 0, 1, 5) and not unfinished:
            exits[-1] = f"{done.returncode}: {done.output.strip()[-1500:]}"
        if not unfinished or done.returncode is None:
            break
        deselect.write_text("".join(f"{n}\n" for n in outcomes))
    return _pytest_result(suite, outcomes, collected, attempts, exits)


def _hang_text(hang: Path, nodeid: str) -> str:
    text = hang.read_text(errors="replace") if hang.exists() else ""
    marker = f"=== {nodeid}:"
    return text[text.rfind(marker):][:6000] if marker in text else ""  # the hung call is on top


def _pytest_result(suite: Suite, outcomes: dict, collected, attempts: int, exits: list) -> Result:
    counts: dict[str, int] = {}
    for record in outcomes.values():
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
    not_run = max(0, (collected or 0) - len(outcomes))
    bad = {k: v for k, v in counts.items() if k in ("failed", "error", "timeout", "xpassed")}
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no test reported"
    if not_run:
        summary += f", {not_run} not run"
    problems = []
    if collected is None:
        problems.append("pytest collected nothing or could not start")
    if bad or not_run:
        problems.append("tests failed or did not run")
    if not counts.get("passed") and not suite.emulate:
        skips = [r["message"] for r in outcomes.values() if r["outcome"] == "skipped"]
        reason = skips[0].removeprefix("Skipped: ") if skips else ""
        problems.append("no test ran on the CUDA backend" + (f" (skipped: {reason})" if reason else ""))
    abnormal = [e for e in exits if e not in (0, 1, 5, None)]
    if abnormal:
        problems.append(f"pytest ended abnormally: {abnormal[0]}")
    failures = [r for r in outcomes.values() if r["outcome"] in bad]
    details = {"counts": counts, "collected": collected, "not_run": not_run, "runs": attempts, "exits": exits,
               "failures": failures, "slowest": sorted(({"nodeid": r["nodeid"], "seconds": r.get("seconds", 0)}
                                                        for r in outcomes.values()),
                                                       key=lambda r: -r["seconds"])[:8]}
    if problems:
        summary += " | " + "; ".join(problems)
    return Result(FAIL if problems else PASS, summary, details)


def _golden_checker(suite: Suite) -> "Path | None":
    candidates = [os.environ.get("GOLDEN_CHECK"), suite.args.data / "golden_check.py",
                  REPO.parent / "shared" / "tools" / "golden_check.py"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def golden_stage(suite: Suite, budget: float) -> Result:
    """golden_check.py units, deploy and solver with --device gpu; parses its 'ok'/'BAD' and 'PASS n/m' lines."""
    checker = _golden_checker(suite)
    if checker is None:
        return Result(SKIP, f"golden_check.py not found (set GOLDEN_CHECK, or run benchmarks/gpu_data.sh to copy "
                            f"it into {suite.args.data}); tests/fixtures/golden still ran in the pytest stage")
    full = suite.args.data / "golden"
    folder = full if (full / "index.json").is_file() and not suite.emulate else REPO / "tests" / "fixtures" / "golden"
    stop = time.monotonic() + budget
    details = {"checker": str(checker), "folder": str(folder), "checks": {}}
    for what in ("units", "deploy", "solver"):
        left = stop - time.monotonic()
        if left < 3:
            details["checks"][what] = {"verdict": "not run: the stage's time ran out", "passed": False, "lines": []}
            continue
        done = suite.command(suite.python(checker, folder, what, "--device", "gpu", emulated=True), left,
                             f"golden {what}")
        verdict = re.findall(r"^(?:PASS|FAIL) \d+/\d+.*$", done.output, re.M)
        lines = re.findall(r"^(?:ok |BAD) .*$", done.output, re.M)
        passed = done.returncode == 0 and bool(verdict) and verdict[-1].startswith("PASS")
        if not verdict:
            lines.append(done.output.strip()[-1500:] or "(no output)")
        details["checks"][what] = {"verdict": verdict[-1] if verdict else (
            f"stopped after {left:.0f} s" if done.returncode is None else f"no verdict (exit {done.returncode})"),
            "passed": passed, "lines": lines}
    checks = details["checks"]
    summary = f"{folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder}: " + "; ".join(
        f"{what} {c['verdict']}{_first_bad(c['lines'])}" for what, c in checks.items())
    return Result(PASS if all(c["passed"] for c in checks.values()) else FAIL, summary, details)


def _first_bad(lines: list[str]) -> str:
    """' (the first line that is not a passing case)', or nothing."""
    bad = [line for line in lines if not line.startswith("ok ")]
    return f" ({bad[0][:200]})" if bad else ""


def benchmark_stage(math: str) -> Callable[[Suite, float], Result]:
    """bench_memnet.py at the issue's sizes (emulated: tiny), its JSON kept even when stopped half-way."""
    def run(suite: Suite, budget: float) -> Result:
        if math != "fp32":
            asked = suite.command(suite.python(BENCH / "bench_memnet.py", "--list-math"), budget, "math modes")
            modes = asked.output.strip().splitlines()[-1:] if asked.returncode == 0 else []
            if not modes or math not in json.loads(modes[0]):
                return Result(SKIP, f"the engine has no opt-in {math.upper()} mode (me.Net / SGDSolver take no "
                                    f"math=): {asked.output.strip()[-200:]}")
        found = suite.work / f"bench-{math}.json"
        args = list(BENCH_EMULATED if suite.emulate else BENCH_GPU)
        if suite.emulate:
            args += ["--torch-device", "cpu"] if importlib.util.find_spec("torch") else ["--no-torch"]
        args += ["--math", math, "--json", "--json-file", str(found)]
        done = suite.command(suite.python(BENCH / "bench_memnet.py", *args, emulated=True), budget,
                             f"benchmark {math}")
        figures = _read_json(found) or {}
        text = done.output.split("\nMemNet ", 1)
        table = ("MemNet " + text[1]).rsplit("\n{", 1)[0] if len(text) > 1 else ""
        details = {"figures": figures, "table": table, "log_tail": done.output.strip()[-3000:]}
        if done.returncode == 0 and figures.get("complete"):
            return Result(PASS, _benchmark_line(figures), details)
        why = f"stopped after {budget:.0f} s" if done.returncode is None else (
            figures.get("error") or f"exit {done.returncode}: {done.output.strip()[-300:]}")
        return Result(FAIL, f"{why} | measured so far: {_benchmark_line(figures) or 'nothing'}", details)
    return run


def _benchmark_line(figures: dict) -> str:
    parts = []
    for label, section in [("train", figures.get("train") or {}), *(figures.get("infer") or {}).items()]:
        engine = section.get("engine")
        if engine:
            ratio = (section.get("ratio") or {}).get("time")
            parts.append(f"{label} {engine['ms']:.4g} ms" + (f" ({ratio:.3g}x PyTorch)" if ratio else ""))
    return "; ".join(parts)


STAGES = [
    Stage("environment", 60, 15, probe_stage("environment")),
    Stage("kernels", 90, 15, probe_stage("kernels")),
    Stage("pytest", 150, 40, pytest_stage),
    Stage("golden", 100, 30, golden_stage),
    Stage("benchmark", 120, 60, benchmark_stage("fp32")),
    Stage("benchmark-tf32", 75, 45, benchmark_stage("tf32"), optional=True),
]


def parse_args(argv: "list[str] | None" = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulate", action="store_true", help="run the stages on the CPU kernel emulator, small sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_report", help="report folder (default: $OUT)")
    ap.add_argument("--budget", type=float, default=345.0, help="seconds for all stages together")
    ap.add_argument("--test-timeout", type=float, default=30.0, help="seconds one test may run")
    ap.add_argument("--stages", help="comma-separated subset of the stages to run (default: all): "
                    + ",".join(s.name for s in STAGES))
    ap.add_argument("--data", type=Path, default=REPO / ".gpu_data",
                    help="folder of the copied golden data and golden_check.py (benchmarks/gpu_data.sh)")
    args = ap.parse_args(argv)
    if args.budget <= 0 or args.test_timeout <= 0:
        ap.error("--budget and --test-timeout must be positive")
    names = [s.name for s in STAGES]
    args.stages = args.stages.split(",") if args.stages else names
    unknown = [name for name in args.stages if name not in names]
    if unknown:
        ap.error(f"unknown stage {', '.join(unknown)} (stages: {', '.join(names)})")
    return args


def _stopped(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: "list[str] | None" = None) -> int:
    suite = Suite(parse_args(argv))
    print(f"[suite] memnet-engine GPU suite ({suite.meta['mode']}), report in {suite.out}/", flush=True)
    signal.signal(signal.SIGTERM, _stopped)
    try:
        ok = suite.run([stage for stage in STAGES if stage.name in suite.args.stages])
    except KeyboardInterrupt as ex:
        suite.meta["stopped"] = f"the suite was stopped ({ex or 'Ctrl-C'}) during a stage; the report holds the stages before it"
        suite.write()
        print(f"[suite] {suite.meta['stopped']}: {suite.out}/report.md", flush=True)
        return 130
    try:
        print(console_summary(suite.report()), flush=True)
    except Exception as ex:  # the report files are written; only the console summary is lost
        print(f"[suite] {'PASS' if ok else 'FAIL'}; the summary could not be printed ({ex!r}): see {suite.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
