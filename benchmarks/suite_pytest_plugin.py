"""pytest plugin of the GPU suite (``-p suite_pytest_plugin``, with benchmarks/ on sys.path).

- ``--suite-results FILE``: one JSON line per event, written as it happens, so that a run that crashed or
  was stopped still tells which tests finished and which one was running: ``{"event": "collected",
  "count": n}``, ``{"event": "start", "nodeid": ...}``, ``{"event": "end", "nodeid": ..., "outcome":
  "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed", "message": ..., "seconds": ...}``.
- ``--suite-test-timeout S``: a test still running after S seconds is stopped even inside a CUDA call:
  faulthandler's watchdog thread writes every thread's traceback to FILE.hang.txt and ends the process
  (pytest-timeout is not needed; the suite then runs the remaining tests in a new process).
- ``--suite-deselect FILE``: leave out the node ids listed in FILE, one a line (those already run).
"""
from __future__ import annotations

import faulthandler
import json
import time

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("gpu suite")
    group.addoption("--suite-results", help="append one JSON line per collection / test start / test end here")
    group.addoption("--suite-test-timeout", type=float, default=0.0,
                    help="seconds a test may run before the process is ended with a traceback dump")
    group.addoption("--suite-deselect", help="file of node ids to leave out, one a line")


def pytest_configure(config) -> None:
    if config.getoption("--suite-results"):
        config.pluginmanager.register(Recorder(config), "suite_recorder")


class Recorder:
    """Writes the JSON lines, arms the per-test watchdog and leaves out the listed tests."""

    def __init__(self, config):
        path = config.getoption("--suite-results")
        self.timeout = config.getoption("--suite-test-timeout")
        self.deselect = config.getoption("--suite-deselect")
        self.out = open(path, "a", encoding="utf-8", buffering=1)
        self.hang = open(f"{path}.hang.txt", "a", encoding="utf-8")
        self.reports: dict[str, list] = {}

    def write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")

    def pytest_unconfigure(self) -> None:
        self.out.close()
        self.hang.close()

    def pytest_collection_modifyitems(self, config, items) -> None:
        if self.deselect:
            with open(self.deselect, encoding="utf-8") as f:
                leave_out = {line.strip() for line in f if line.strip()}
            deselected = [item for item in items if item.nodeid in leave_out]
            if deselected:
                config.hook.pytest_deselected(items=deselected)
                items[:] = [item for item in items if item.nodeid not in leave_out]

    def pytest_collection_finish(self, session) -> None:
        self.write({"event": "collected", "count": len(session.items)})  # after -m / -k / --suite-deselect

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.write({"event": "start", "nodeid": item.nodeid})
        if self.timeout:
            self.hang.write(f"\n=== {item.nodeid}: still running after {self.timeout:g} s; every thread's stack:\n")
            self.hang.flush()
            faulthandler.dump_traceback_later(self.timeout, exit=True, file=self.hang)
        start = time.perf_counter()
        yield
        if self.timeout:
            faulthandler.cancel_dump_traceback_later()
        self.write({"event": "end", "nodeid": item.nodeid, "seconds": round(time.perf_counter() - start, 3),
                    **outcome(self.reports.pop(item.nodeid, []))})

    def pytest_runtest_logreport(self, report) -> None:
        self.reports.setdefault(report.nodeid, []).append(report)


def outcome(reports: list) -> dict:
    """One outcome for a test from its setup / call / teardown reports, with the failure text or skip reason."""
    for report in reports:
        if report.failed:
            return {"outcome": "failed" if report.when == "call" else "error",
                    "message": f"[{report.when}] {report.longreprtext[-4000:]}"}
    for report in reports:
        if hasattr(report, "wasxfail"):
            return {"outcome": "xfailed" if report.skipped else "xpassed", "message": str(report.wasxfail)}
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            return {"outcome": "skipped", "message": reason}
    passed = any(r.when == "call" and r.passed for r in reports)
    return {"outcome": "passed" if passed else "error", "message": "" if passed else "no report of the test's call"}
