"""benchmarks/gpu_suite.py: its --emulate mode end to end (so the GPU suite cannot rot before a GPU is lent),
a hung test that is stopped while the rest still run, the time budget, and a clean failing report without CuPy."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from gpu.cuda_emulator import build

SUITE = REPO / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite_module():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


def run_suite(tmp_path, *args: str) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run([sys.executable, str(SUITE), "--out", str(tmp_path), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    report = json.loads((tmp_path / "report.json").read_text())
    return done.returncode, report, done.stdout + done.stderr


@pytest.mark.slow  # ~30 s: every stage on the CPU kernel emulator
@pytest.mark.skipif(not build.compiler_available(), reason="no C++ compiler for the kernel emulator")
def test_emulated_suite_runs_every_stage_and_reports(tmp_path) -> None:
    code, report, output = run_suite(tmp_path, "--emulate")
    stages = report["stages"]
    assert code == 0 and report["ok"], output[-3000:]
    assert list(stages) == ["environment", "kernels", "pytest", "golden", "benchmark", "benchmark-tf32"]
    assert stages["environment"]["details"]["facts"]["cupy"]["device"] == "CPU kernel emulator"
    assert all(entry["ok"] for entry in stages["kernels"]["details"]["facts"].values())
    assert stages["pytest"]["details"]["counts"].get("passed", 0) >= 20
    assert stages["pytest"]["details"]["not_run"] == 0
    golden = stages["golden"]
    if golden["status"] == "skip":  # a clean clone has no ../shared/tools/golden_check.py
        assert "golden_check.py not found" in golden["summary"]
    else:
        assert golden["status"] == "pass" and "units PASS 17/17" in golden["summary"]
    figures = stages["benchmark"]["details"]["figures"]
    assert figures["complete"] and figures["device"]["name"] == "CPU kernel emulator"
    assert figures["train"]["engine"]["ms"] > 0 and figures["train"]["engine"]["peak_bytes"] > 0
    assert set(figures["infer"]) == {"12x12", "16x16"}
    assert stages["benchmark-tf32"]["status"] in ("skip", "pass")
    markdown = (tmp_path / "report.md").read_text()
    assert "| pytest | PASS |" in markdown and "training step" in markdown
    assert "tests/gpu/test_gpu_golden.py" in (tmp_path / "suite.log").read_text()
    assert "memnet-engine GPU suite: PASS" in output  # the console ends with the summary


def test_a_hung_test_is_stopped_and_the_others_still_run(suite_module, tmp_path, monkeypatch) -> None:
    tests = tmp_path / "test_hangs.py"
    tests.write_text("import time\n\ndef test_a():\n    pass\n\ndef test_hangs():\n    time.sleep(600)\n\n"
                     "def test_c():\n    assert 1 + 1 == 3\n")
    monkeypatch.setattr(suite_module, "EMULATED_TESTS", [str(tests)])
    suite = suite_module.Suite(suite_module.parse_args(["--emulate", "--out", str(tmp_path / "out"),
                                                        "--test-timeout", "2"]))
    start = time.monotonic()
    result = suite_module.pytest_stage(suite, 120)
    assert time.monotonic() - start < 60
    assert result.status == "fail" and result.details["runs"] == 2
    assert result.details["counts"] == {"passed": 1, "timeout": 1, "failed": 1}
    by_id = {r["nodeid"].rpartition("::")[2]: r for r in result.details["failures"]}
    assert "test_hangs" in by_id["test_hangs"]["message"] and "time.sleep" not in by_id["test_c"]["message"]
    assert "line 7 in test_hangs" in by_id["test_hangs"]["message"]  # faulthandler's dump of the hung test


def test_stage_budgets_keep_time_for_later_stages(suite_module, tmp_path) -> None:
    budgets = {}

    def stage(name: str, crash: bool = False):
        def run(suite, budget):
            budgets[name] = budget
            if crash:
                raise KeyError("bug")
            return suite_module.Result("pass", name)
        return run

    suite = suite_module.Suite(suite_module.parse_args(["--out", str(tmp_path), "--budget", "20"]))
    Stage = suite_module.Stage
    ok = suite.run([Stage("a", 100, 2, stage("a", crash=True)), Stage("b", 100, 12, stage("b")),
                    Stage("extra", 100, 50, stage("extra"), optional=True)])
    assert budgets["a"] <= 8.5 and budgets["b"] >= 11 and "extra" not in budgets
    assert not ok and suite.results["a"].status == "fail" and "KeyError" in suite.results["a"].summary
    assert suite.results["b"].status == "pass" and suite.results["extra"].status == "skip"
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is False


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed: not the case tested")
def test_without_cupy_the_gpu_run_fails_with_a_clear_report(tmp_path) -> None:
    code, report, output = run_suite(tmp_path, "--stages", "environment,kernels,benchmark")
    stages = report["stages"]
    assert code == 1 and not report["ok"]
    assert [s["status"] for s in stages.values()] == ["fail", "fail", "fail"]
    assert "CuPy" in stages["environment"]["summary"] and "needs CuPy" in stages["kernels"]["summary"]
    assert "needs CuPy" in stages["benchmark"]["summary"]
    assert "Traceback" not in json.dumps(report) and "Traceback" not in output
    assert "| environment | FAIL |" in (tmp_path / "report.md").read_text()


def test_a_command_past_its_time_is_stopped_with_its_children(suite_module, tmp_path) -> None:
    suite = suite_module.Suite(suite_module.parse_args(["--out", str(tmp_path)]))
    script = "import subprocess, time; print(subprocess.Popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    done = suite.command([sys.executable, "-c", script], 2, "sleeper")
    assert done.returncode is None and done.seconds < 20
    stat = Path(f"/proc/{done.output.split()[0]}/stat")
    time.sleep(0.2)
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"  # gone, or dead and not yet reaped
    assert "STOPPED after 2 s" in suite.log[-1]
