"""The GPU suite's report as Markdown (report.md) and as the short summary printed last on the console."""
from __future__ import annotations

import json


def _headline(report: dict) -> str:
    verdict = "PASS" if report["ok"] else "FAIL"
    stopped = f" -- {report['stopped']}" if report.get("stopped") else ""
    return (f"memnet-engine GPU suite: {verdict} ({report['mode']}, {report['wall_s']:.0f} s of "
            f"{report['budget_s']:.0f} s budget, started {report['started']}){stopped}")


def _stage_table(stages: dict) -> list[str]:
    lines = ["| stage | status | seconds | summary |", "|---|---|---|---|"]
    for name, r in stages.items():
        summary = r["summary"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {r['status'].upper()} | {r['seconds']:.0f} | {summary} |")
    return lines


def _fenced(text: str, language: str = "") -> list[str]:
    return [f"```{language}", text.rstrip(), "```"]


def _environment(details: dict) -> list[str]:
    return _problems(details) + _fenced(json.dumps(details.get("facts", {}), indent=1, default=str), "json")


def _problems(details: dict) -> list[str]:
    return [f"- **problem:** {p}" for p in details.get("problems", [])] + [""]


def _kernels(details: dict) -> list[str]:
    lines = _problems(details) + ["| family | result |", "|---|---|"]
    broken = []
    for family, entry in (details.get("facts") or {}).items():
        result = f"compiled in {entry['seconds']:.2f} s" if entry.get("ok") else "FAILED"
        lines.append(f"| {family} | {result} |")
        if not entry.get("ok"):
            broken.append((family, entry.get("error", "")))
    for family, error in broken:
        lines += ["", f"### {family}: compiler output"] + _fenced(error)
    return lines


def _pytest(details: dict) -> list[str]:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(details.get("counts", {}).items()))
    head = (f"collected {details.get('collected')}; {counts}; not run {details.get('not_run', 0)}; "
            f"pytest runs {details.get('runs')} (exits {details.get('exits')})")
    lines = [head, ""]
    failures = details.get("failures", [])
    for record in failures[:40]:
        lines += [f"### {record['outcome'].upper()}: `{record['nodeid']}`"] + _fenced(record.get("message", "")[-3000:])
    if len(failures) > 40:
        lines.append(f"... and {len(failures) - 40} more (report.json has them all)")
    slowest = details.get("slowest", [])
    if slowest:
        lines += ["", "slowest: " + ", ".join(f"`{r['nodeid']}` {r['seconds']:.1f} s" for r in slowest)]
    return lines


def _golden(details: dict) -> list[str]:
    if not details:
        return []
    lines = [f"checker `{details.get('checker')}` on `{details.get('folder')}` (--device gpu)", ""]
    for what, check in details.get("checks", {}).items():
        lines += [f"### {what}: {check['verdict']}"] + _fenced("\n".join(check["lines"]) or "(nothing)")
    return lines


def _benchmark(details: dict) -> list[str]:
    if not details:
        return []
    figures = details.get("figures") or {}
    lines = _fenced(details.get("table") or "(no table: the benchmark did not finish; its log's end:)\n"
                    + details.get("log_tail", ""))
    for warning in figures.get("warnings", []):
        lines.append(f"- warning: {warning}")
    activity = ((figures.get("train") or {}).get("engine") or {}).get("activity")
    if activity and activity.get("top_kernels"):
        lines += ["", "memnet-engine training step, kernels by GPU time (CUDA profiler):", "",
                  "| kernel | launches | ms |", "|---|---|---|"]
        lines += [f"| `{k['name'][:90]}` | {k['count']} | {k['ms']:.3f} |" for k in activity["top_kernels"]]
    return lines


SECTIONS = {"environment": _environment, "kernels": _kernels, "pytest": _pytest, "golden": _golden,
            "benchmark": _benchmark, "benchmark-tf32": _benchmark}


def markdown(report: dict) -> str:
    lines = [f"# {_headline(report)}", "", f"command: `{report['command']}`", ""]
    lines += _stage_table(report["stages"])
    for name, stage in report["stages"].items():
        lines += ["", f"## {name}: {stage['status'].upper()}", "", stage["summary"], ""]
        lines += SECTIONS.get(name, lambda d: [])(stage.get("details") or {})
    lines += ["", "Full output of every command: suite.log; every figure: report.json."]
    return "\n".join(lines) + "\n"


def console_summary(report: dict) -> str:
    """What the console shows last (a device call returns only the end of the output)."""
    lines = ["", "=" * 100, _headline(report)]
    for name, r in report["stages"].items():
        lines.append(f"  {name:15} {r['status'].upper():5} {r['seconds']:5.0f} s  {r['summary'][:400]}")
    for name in ("benchmark", "benchmark-tf32"):
        table = ((report["stages"].get(name) or {}).get("details") or {}).get("table")
        if table:
            lines += ["", f"--- {name}", table.rstrip()]
    lines.append(f"report: {report['out']}/report.md (figures: report.json, logs: suite.log)")
    return "\n".join(lines)
