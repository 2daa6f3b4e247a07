"""benchmarks/bench_memnet.py: its nets are the release's MemNet, its PyTorch twin has the same
parameters, and bad input is one clear error."""
from __future__ import annotations

import importlib.util
import json

import pytest

import memnet_engine as me
from conftest import REPO
from memnet_engine.core.prototxt import read_net_param


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_memnet", REPO / "benchmarks" / "bench_memnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_nets_are_the_committed_m6r6_with_in_memory_data(bench) -> None:
    train, deploy = bench.benchmark_nets(6, 6, 64, batch=8, patch=31, size=288)
    committed = read_net_param(str(REPO / "prototxt" / "memnet_m6r6.prototxt"))
    assert train.layer[0].type == "Input" and list(train.layer[0].top) == ["data", "label"]
    assert list(train.layer[0].input_param.shape[0].dim) == [8, 1, 31, 31]
    assert list(train.layer)[1:] == list(committed.layer)[1:]
    assert list(deploy.input_dim) == [1, 1, 288, 288]


def test_pytorch_twin_has_the_engines_learnable_values(bench) -> None:
    pytest.importorskip("torch")
    blocks, recursions, channels = 2, 3, 8
    train, _ = bench.benchmark_nets(blocks, recursions, channels, batch=2, patch=9, size=9)
    net = me.Net(train, phase=me.TRAIN)
    learned = sum(p.blob.count for p in net.learnable_params if p.lr_mult)  # BatchNorm statistics are buffers
    model = bench.torch_memnet(blocks, recursions, channels)
    assert sum(p.numel() for p in model.parameters()) == learned


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--iters", "-1"], ["--warmup", "-2"]])
def test_bad_arguments_exit_with_usage(bench, argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_unreadable_prototxt_is_one_clear_error(bench, capsys) -> None:
    assert bench.main(["--device", "cpu", "--no-torch", "--train-prototxt", "/nonexistent.prototxt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench_memnet: ") and "nonexistent.prototxt" in err and "Traceback" not in err


TINY_CPU = ["--device", "cpu", "--no-torch", "--blocks", "2", "--recursions", "1", "--iters", "1", "--warmup", "0",
            "--gemm-size", "64", "--batch", "2", "--patch", "9"]


def test_json_line_holds_every_printed_figure(bench, capsys) -> None:
    assert bench.main(TINY_CPU + ["--channels", "4", "--size", "6", "10", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["complete"] and report["schema"] == bench.SCHEMA
    printed = [float(line.split()[2]) for line in out if line.startswith("  time (ms)")]
    sections = [report["train"], report["infer"]["6x6"], report["infer"]["10x10"]]
    assert printed == pytest.approx([s["engine"]["ms"] for s in sections], abs=0.006)
    assert report["gemm_peak"]["engine"]["size"] == 64 and report["gemm_peak"]["engine"]["tflops"] > 0
    assert all(s["engine"]["conv_tflops"] > 0 and 0 < s["engine"]["gemm_fraction"] for s in sections)
    assert set(report["layer_types"]) >= {"Convolution", "BatchNorm+Scale+ReLU", "Concat", "EuclideanLoss"}
    profile = report["train"]["engine"]["profile"]  # me.profile() of solver steps: nothing launched on the CPU
    assert profile["launches_per_step"] == 0 and profile["transfers_per_step"] == 0


def test_cpu_inference_peak_counts_the_nets_own_arrays(bench, capsys) -> None:
    """#12 item 10 on the CPU: the peak is traced from before the deploy net is built, so its weights count
    (tracing only the step's allocations left them out)."""
    assert bench.main(TINY_CPU + ["--channels", "16", "--size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, deploy = bench.benchmark_nets(2, 1, 16, batch=2, patch=9, size=4)
    weights = sum(b.data.nbytes for blobs in me.Net(deploy, phase=me.TEST).params.values() for b in blobs)
    assert report["infer"]["4x4"]["engine"]["peak_bytes"] >= weights


def test_torch_calls_name_the_device_of_gpu_n(bench, monkeypatch) -> None:
    """#12 item 10: with --device gpu:1, PyTorch's synchronise and memory calls act on device 1, not 0."""
    torch = pytest.importorskip("torch")
    calls = []
    for name in ("synchronize", "reset_peak_memory_stats", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name: calls.append((name, device)) or 7)
    tdev = bench.TorchDevice(torch, "gpu:1")
    assert tdev.peak_bytes(lambda: None) == 7
    tdev.sync()
    assert {name for name, _ in calls} == {"synchronize", "reset_peak_memory_stats", "max_memory_allocated"}
    assert all(device == torch.device("cuda", 1) for _, device in calls), calls


def test_tf32_only_when_the_engine_has_it(bench, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench, "engine_math_modes", lambda: ["fp32"])
    assert bench.main(TINY_CPU + ["--math", "tf32"]) == 1
    assert "no opt-in TF32 mode" in capsys.readouterr().err
    monkeypatch.setattr(bench, "engine_math_modes", lambda: ["fp32", "tf32"])
    assert bench.math_kwargs("tf32") == {"math": "tf32"} and bench.math_kwargs("fp32") == {}


def test_list_math_prints_the_engines_modes(bench, capsys) -> None:
    assert bench.main(["--list-math"]) == 0
    modes = json.loads(capsys.readouterr().out)
    assert modes[0] == "fp32" and set(modes) <= {"fp32", "tf32"}


def test_a_failed_run_leaves_its_error_in_the_json_file(bench, tmp_path, capsys) -> None:
    found = tmp_path / "figures.json"
    argv = TINY_CPU + ["--json-file", str(found), "--train-prototxt", "/nonexistent.prototxt"]
    assert bench.main(argv) == 1
    report = json.loads(found.read_text())
    assert not report["complete"] and "nonexistent.prototxt" in report["error"]
    assert "gemm_peak" in report and "nonexistent.prototxt" in capsys.readouterr().err


def test_kernel_summary_counts_launches_copies_and_time(bench) -> None:
    from bench_measure import kernel_summary

    events = [{"cat": "kernel", "name": "relu_forward<float>", "dur": 10.0},
              {"cat": "Kernel", "name": "sgemm_128x64", "dur": 250.0},
              {"cat": "kernel", "name": "relu_forward<float>", "dur": 14.0},
              {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "dur": 3.0},
              {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "dur": 3.0},
              {"cat": "gpu_memset", "name": "Memset (Device)", "dur": 1.0},
              {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "dur": 5.0}]
    summary = kernel_summary(events)
    assert (summary["kernels"], summary["memcpy"], summary["memcpy_dtoh"], summary["memset"]) == (3, 2, 1, 1)
    assert summary["kernel_ms"] == pytest.approx(0.274)
    assert summary["top_kernels"][0] == {"name": "sgemm_128x64", "count": 1, "ms": 0.25}
    assert summary["top_kernels"][1] == {"name": "relu_forward<float>", "count": 2, "ms": 0.024}


def test_profiler_trace_is_read_back(bench) -> None:
    """The Chrome-trace plumbing of the CUDA activity figures, on the CPU (no CUDA needed)."""
    torch = pytest.importorskip("torch")
    from bench_measure import trace_events

    x = torch.ones(64, 64)
    events = trace_events(lambda: None, lambda: torch.mm(x, x), [torch.profiler.ProfilerActivity.CPU])
    assert any(e.get("cat") == "cpu_op" and "mm" in e.get("name", "") for e in events)


def test_a_failing_phase_does_not_hide_the_others(bench, monkeypatch, capsys) -> None:
    def broken_step(self):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(bench.EngineTraining, "step", broken_step)
    assert bench.main(TINY_CPU + ["--channels", "4", "--size", "6", "--json"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["errors"] == ["memnet-engine training: RuntimeError: kernel failed"] and not report["complete"]
    assert report["infer"]["6x6"]["engine"]["ms"] > 0 and "inference runs with the fillers" in report["warnings"][0]
    assert "FAILED: memnet-engine training: RuntimeError: kernel failed" in out


def test_interleaved_phases_report_per_round_ratios(bench, capsys) -> None:
    pytest.importorskip("torch")
    argv = [a for a in TINY_CPU if a != "--no-torch"] + ["--channels", "4", "--size", "6", "--iters", "3",
                                                         "--interleave", "--json"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert set(report["interleaved"]) == {"train", "6x6"} and not report["errors"]
    for row in report["interleaved"].values():
        assert row["rounds"] == 3 and row["engine_ms"] > 0 and row["torch_ms"] > 0
        assert 0 < row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
    assert any(line.lstrip().startswith("inference 6x6") and "per-round ratio" in line for line in out)


def test_interleave_needs_pytorch(bench, capsys) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--interleave", "--no-torch"])
    assert "--interleave" in capsys.readouterr().err
