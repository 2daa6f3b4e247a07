"""The benchmark's GPU branch (device, fused SGD update with clipping, memory probe) on a tiny net."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import memnet_engine as me
from conftest import REPO  # tests/conftest.py

TINY = ["--device", "gpu", "--no-torch", "--blocks", "2", "--recursions", "1", "--channels", "4", "--iters", "2",
        "--warmup", "1", "--gemm-size", "64", "--json"]


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_memnet", REPO / "benchmarks" / "bench_memnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_json(bench, argv: list[str], capsys) -> dict:
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    assert "training loss" not in captured.err  # finite after the clipped updates
    return json.loads(captured.out.strip().splitlines()[-1])


def test_benchmark_gpu_path_runs_a_tiny_memnet(gpu, bench, capsys) -> None:
    report = run_json(bench, TINY + ["--batch", "2", "--patch", "9", "--size", "12"], capsys)
    assert report["complete"] and report["device"]["spec"] == "gpu"
    rows = [report["train"]["engine"], report["infer"]["12x12"]["engine"]]
    assert all(row["ms"] > 0 and row["peak_bytes"] > 0 for row in rows)
    assert report["gemm_peak"]["engine"]["tflops"] > 0
    assert report["layer_types"]["Convolution"]["forward_ms"] > 0


def test_inference_peak_is_the_deploy_nets_own_not_the_training_nets(gpu, bench, capsys) -> None:
    """#12 item 10: the training net is freed before inference is measured, so a big training batch does not
    show up in the inference peak (it did: the baseline was taken with the training blobs alive)."""
    if not hasattr(gpu, "memory"):
        pytest.skip("the exact footprint is read from the emulator's allocation counter")
    report = run_json(bench, TINY + ["--batch", "8", "--patch", "12", "--size", "6"], capsys)
    train_peak, infer_peak = report["train"]["engine"]["peak_bytes"], report["infer"]["6x6"]["engine"]["peak_bytes"]
    # the same deploy net and forward on its own: live device bytes at most during the forward
    _, deploy = bench.benchmark_nets(2, 1, 4, batch=8, patch=12, size=6)
    before = gpu.memory["live"]
    net = me.Net(deploy, phase=me.TEST, device="gpu")
    net.blobs["data"].data[...] = np.ones((1, 1, 6, 6), np.float32)
    gpu.reset_peak()
    net.forward_range(keep_intermediates=False)
    footprint = gpu.memory["peak"] - before
    assert train_peak > 20 * footprint  # the case the old baseline got wrong
    assert footprint * 0.9 <= infer_peak <= footprint * 1.5, (infer_peak, footprint)
