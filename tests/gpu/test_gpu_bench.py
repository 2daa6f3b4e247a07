"""The benchmark's GPU branch (device, fused SGD update with clipping, memory probe) on a tiny net."""
from __future__ import annotations

import importlib.util
import re

from conftest import REPO  # tests/conftest.py


def test_benchmark_gpu_path_runs_a_tiny_memnet(gpu, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_memnet", REPO / "benchmarks" / "bench_memnet.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--device", "gpu", "--no-torch", "--batch", "2", "--patch", "9", "--size", "12", "--blocks", "2",
            "--recursions", "1", "--channels", "4", "--iters", "2", "--warmup", "1"]
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    assert "training loss" not in captured.err  # finite after the clipped updates
    rows = dict(re.findall(r"^(training step \(ms\)|inference \(ms\))\s+([0-9.]+)", captured.out, re.M))
    assert set(rows) == {"training step (ms)", "inference (ms)"} and all(float(v) > 0 for v in rows.values())
    memory = re.findall(r"peak memory \(MiB\)\s+(\S+)", captured.out)
    assert len(memory) == 2 and "n/a" not in memory
    assert re.search(r"^  Convolution\s+[0-9.]+\s+[0-9.]+", captured.out, re.M)
