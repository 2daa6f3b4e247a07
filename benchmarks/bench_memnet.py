#!/usr/bin/env python3
"""Benchmark MemNet (M6R6, 64 channels) on memnet-engine against the same network in PyTorch.

Measures, for each engine: a training step (forward + backward + gradient clipping + SGD
momentum/weight-decay update, the golden MemNet solver's settings; memnet-engine's SGDSolver.step)
on a batch of patches, and inference on one image per --size; per-layer-type times of memnet-engine
(like ``caffe time``), achieved convolution TFLOP/s next to the GEMM peak measured in the same run,
peak memory, kernel launches (CUDA: counted by the CUDA profiler through torch.profiler), and the ratio
memnet-engine / PyTorch.  PyTorch runs eagerly in float32 with cuDNN (benchmark mode); TF32 is off
unless --math tf32 (which needs the engine's opt-in TF32 mode, ``Net(..., math="tf32")``).

  python benchmarks/bench_memnet.py                         # GPU: batch 64 of 31x31, image 288x288
  python benchmarks/bench_memnet.py --size 288 1024 --json  # last line: every figure as one JSON object
  python benchmarks/bench_memnet.py --device cpu --batch 4 --size 64 --iters 2

Phases run one after another and each frees its nets before the next starts, so every peak-memory
figure is that phase's own: its net's parameters, kept blobs and the step's transient arrays.  With
--interleave, each phase is also timed with memnet-engine's and PyTorch's steps in turn, one of each per
round: the median of the per-round ratios holds on a machine whose speed drifts between phases.

The net comes from memnet_engine.models (the original release's topology and names, as in
prototxt/memnet_m6r6*.prototxt) with in-memory random data; --train-prototxt / --deploy-prototxt
use other files (e.g. prototxt/memnet_m6r6.prototxt, which reads its HDF5 list).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import memnet_engine as me  # noqa: E402
from bench_measure import (Device, PeakMemory, TorchDevice, cuda_activity, gemm_peak, interleaved_ms,  # noqa: E402
                           median_ms, sig, torch_gemm_peak)
from memnet_engine.core.atomic import atomic_path  # noqa: E402
from memnet_engine.core.errors import MemnetError  # noqa: E402
from memnet_engine.core.profiler import Profile  # noqa: E402
from memnet_engine.core.proto import caffe_pb2 as pb  # noqa: E402
from memnet_engine.core.prototxt import read_net_param  # noqa: E402
from memnet_engine.core.solver import SGDSolver, TrainingDiverged  # noqa: E402
from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net, memnet_train_net  # noqa: E402

# The golden MemNet solver's settings; clip_gradients as in Caffe (scale all gradients so their
# global L2 norm is at most CLIP): without it MemNet diverges on random data within a few steps.
BASE_LR, MOMENTUM, WEIGHT_DECAY, CLIP = 0.01, 0.9, 1e-4, 1.0  # PyTorch gets the same
SCHEMA = "memnet-bench/1"


class BenchError(Exception):
    """A benchmark that cannot run as asked (reported as one line, exit status 1)."""


# ---------------------------------------------------------------------------------------- the net
def benchmark_nets(blocks: int, recursions: int, channels: int, batch: int, patch: int,
                   size: int) -> tuple[pb.NetParameter, pb.NetParameter]:
    """(train, deploy) MemNet of memnet_engine.models; the training data come from an Input layer
    (random patches in memory) instead of the release's HDF5Data."""
    config = MemNetConfig(blocks, recursions, channels)
    train = memnet_train_net(config, source="unused.txt", batch_size=batch)
    data = pb.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[batch, 1, patch, patch])
    train.layer[0].CopyFrom(data)
    return train, memnet_deploy_net(config, input_shape=(1, 1, size, size))


def engine_math_modes() -> list[str]:
    """'fp32', plus 'tf32' when both me.Net and SGDSolver take ``math=`` (the opt-in TF32 mode of #9)."""
    def takes_math(callable_) -> bool:
        try:
            return "math" in inspect.signature(callable_).parameters
        except (TypeError, ValueError):
            return False

    return ["fp32", "tf32"] if takes_math(me.Net) and takes_math(SGDSolver) else ["fp32"]


def math_kwargs(math: str) -> dict:
    """Keyword arguments that select ``math`` in me.Net / SGDSolver (none for the default FP32)."""
    if math == "fp32":
        return {}
    if math not in engine_math_modes():
        raise BenchError(f"--math {math}: this memnet-engine has no opt-in {math.upper()} mode "
                         "(me.Net and SGDSolver take no math= argument)")
    return {"math": math}


# ---------------------------------------------------------------------------------------- memnet-engine
def conv_flops(net: me.Net, training: bool) -> float:
    """Multiply-adds x 2 of every convolution (forward; with ``training`` also both gradients)."""
    total = 0.0
    for i, layer in enumerate(net.layers):
        if layer.type != "Convolution":
            continue
        top = net.blobs[net.top_names[i][0]]
        weights = layer.blobs[0]
        forward = 2.0 * top.count * weights.count_range(1)
        total += forward
        if training and net.layer_need_backward[i]:
            total += forward * (1 + net.bottom_need_backward[i][0])
    return total


def solver_param(train: pb.NetParameter, seed: int) -> pb.SolverParameter:
    """The golden MemNet solver's update settings, fixed rate, no display, tests or snapshots."""
    return pb.SolverParameter(net_param=train, base_lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                              clip_gradients=CLIP, lr_policy="fixed", max_iter=2**30, display=0, snapshot=0,
                              random_seed=seed)


def fill_inputs(net: me.Net, seed: int) -> None:
    rs = np.random.default_rng(seed)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.data = blob.xp.asarray(rs.random(blob.shape, dtype=np.float32))


class EngineTraining:
    """memnet-engine's SGDSolver on the training net, fed random patches."""

    def __init__(self, train_param: pb.NetParameter, device: Device, seed: int, math: str):
        self.device = device
        self.solver = SGDSolver(solver_param(train_param, seed), device=device.spec, **math_kwargs(math))
        self.net = self.solver.net
        fill_inputs(self.net, seed)

    def step(self) -> float:
        """One SGDSolver iteration: forward, backward, gradient clipping, update (fused kernel on GPU)."""
        self.solver.step(1)
        return float(self.solver.smoothed_loss)

    def profiled(self, iters: int) -> Profile:
        """``me.profile()`` of ``iters`` solver steps: launches, transfers, peak bytes and per-layer-type
        times (the device is synchronised around every layer while profiling)."""
        with me.profile(device="cpu" if self.device.cupy is None else "gpu") as prof:
            for _ in range(iters):
                self.solver.step(1)
        return prof


class EngineInference:
    """memnet-engine's deploy net on one random image, weights from a .caffemodel."""

    def __init__(self, deploy_param: pb.NetParameter, device: Device, weights: str, seed: int, math: str):
        self.net = me.Net(deploy_param, phase=me.TEST, device=device.spec, weights=weights, **math_kwargs(math))
        fill_inputs(self.net, seed)

    def step(self) -> None:
        self.net.forward_range(keep_intermediates=False)


def conv_forward_ms(net: me.Net, device: Device, run: Callable[[], object]) -> float:
    """Milliseconds spent in the forwards of ``net``'s Convolution layers during ``run()`` (synchronised)."""
    spent = [0.0]

    def timed(forward):
        def wrapper(*args, **options):
            device.sync()
            start = time.perf_counter()
            result = forward(*args, **options)
            device.sync()
            spent[0] += (time.perf_counter() - start) * 1e3
            return result
        return wrapper

    # the device methods: a step fusing a BatchNorm unit into its convolution calls them too
    convs = [layer for layer in net.layers if layer.type == "Convolution"]
    for layer in convs:
        layer.forward_cpu, layer.forward_gpu = timed(layer.forward_cpu), timed(layer.forward_gpu)
    try:
        run()
    finally:
        for layer in convs:
            del layer.forward_cpu, layer.forward_gpu  # back to the class's methods
    return spent[0]


# ---------------------------------------------------------------------------------------- PyTorch
def torch_memnet(blocks: int, recursions: int, channels: int):
    """The same MemNet in PyTorch: BatchNorm2d(affine) = Caffe BatchNorm + Scale(bias)."""
    import torch
    from torch import nn

    def bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Module:
        return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, kernel, padding=kernel // 2))

    class MemNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature = bn_relu_conv(1, channels, 3)
            self.unit_convs = nn.ModuleList(nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in "ab")
                                            for _ in range(blocks))
            self.unit_norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(2 * recursions))
                                            for _ in range(blocks))
            self.gates = nn.ModuleList(bn_relu_conv((m + 1 + recursions) * channels, channels, 1)
                                       for m in range(blocks))
            self.recon = nn.Conv2d(channels, 1, 3, padding=1)
            self.end_norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(blocks))
            self.output_weights = nn.Parameter(torch.ones(blocks))

        def forward(self, x):
            long_memory = [self.feature(x)]
            h, outputs = long_memory[0], []
            for m in range(blocks):
                (conv_a, conv_b), norms, short = self.unit_convs[m], self.unit_norms[m], []
                for r in range(recursions):
                    a = conv_a(torch.relu(norms[2 * r](h)))
                    h = h + conv_b(torch.relu(norms[2 * r + 1](a)))
                    short.append(h)
                h = self.gates[m](torch.cat(long_memory + short, dim=1))
                long_memory.append(h)
                outputs.append(x + self.recon(torch.relu(self.end_norms[m](h))))
            final = sum(w * out for w, out in zip(self.output_weights, outputs))
            return outputs + [final]

    return MemNet()


def set_torch_math(torch, math: str) -> None:
    """cuDNN in benchmark mode; TF32 in cuDNN and cuBLAS only with --math tf32."""
    torch.backends.cuda.matmul.allow_tf32 = math == "tf32"
    torch.backends.cudnn.allow_tf32 = math == "tf32"
    torch.backends.cudnn.benchmark = True


class TorchTraining:
    def __init__(self, args, tdev: TorchDevice, shape):
        torch = self.torch = tdev.torch
        torch.manual_seed(args.seed)
        self.model = torch_memnet(args.blocks, args.recursions, args.channels).to(tdev.dev).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=BASE_LR, momentum=MOMENTUM,
                                         weight_decay=WEIGHT_DECAY)
        self.data = torch.rand(shape, device=tdev.dev)
        self.label = torch.rand(shape, device=tdev.dev)

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=False)
        outputs = self.model(self.data)
        loss = sum(((out - self.label) ** 2).sum() / (2 * out.shape[0]) for out in outputs)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.optimizer.step()
        return float(loss.detach())


class TorchInference:
    def __init__(self, args, tdev: TorchDevice, shape):
        torch = self.torch = tdev.torch
        torch.manual_seed(args.seed)
        self.model = torch_memnet(args.blocks, args.recursions, args.channels).to(tdev.dev).eval()
        self.image = torch.rand(shape, device=tdev.dev)

    def step(self) -> None:
        with self.torch.no_grad():
            self.model(self.image)


# ---------------------------------------------------------------------------------------- the run
class Run:
    """The figures of one benchmark run, in one JSON-ready dict (``report``), written to --json-file
    after every phase so that a run stopped half-way keeps what it measured.  A phase that fails is
    recorded in report["errors"] and the next phase still runs."""

    def __init__(self, args, device: Device):
        self.args, self.device = args, device
        self.report: dict = {
            "schema": SCHEMA, "complete": False,
            "device": {"spec": args.device, "name": device.name(), "torch": args.torch_device},
            "settings": {k: getattr(args, k) for k in ("batch", "patch", "size", "iters", "warmup", "time_limit",
                                                       "blocks", "recursions", "channels", "math", "seed")},
            "math_modes": engine_math_modes(),
            "gemm_peak": {}, "train": {}, "infer": {}, "interleaved": {}, "layer_types": {}, "warnings": [],
            "errors": [],
        }

    def save(self) -> None:
        if self.args.json_file:
            with atomic_path(self.args.json_file) as tmp:
                Path(tmp).write_text(json.dumps(self.report, indent=1), encoding="utf-8")

    def warn(self, text: str) -> None:
        self.report["warnings"].append(text)
        print(f"warning: {text}", file=sys.stderr)

    def optional(self, what: str, measure: Callable[[], object]):
        """``measure()``, or None with a warning when it fails (the main figures still come)."""
        try:
            return measure()
        except Exception as ex:  # an optional figure must not cost the benchmark
            self.warn(f"{what} not measured: {type(ex).__name__}: {str(ex)[:300]}")
            return None

    def attempt(self, what: str, measure: Callable[[], None]) -> bool:
        """Run one phase; its failure goes to report["errors"] (and stderr), the next phase still runs."""
        try:
            measure()
            return True
        except TrainingDiverged as ex:
            error = f"training diverged: {ex}"
        except Exception as ex:  # a kernel or CUDA error in one phase must not hide the others' figures
            error = f"{type(ex).__name__}: {ex}"
        finally:
            self.save()
        self.report["errors"].append(f"{what}: {error[:3000]}")
        print(f"bench_memnet: {what} failed: {error[:3000]}", file=sys.stderr)
        self.save()
        return False

    def timed(self, what: str, sync, step, cuda: bool, peak: "Callable[[Callable], int | None] | None" = None) -> dict:
        """Time ``step`` (after warm-up), then its peak memory (``peak``) and its GPU activity."""
        args = self.args
        print(f"bench_memnet: {what}", file=sys.stderr, flush=True)
        ms, runs = median_ms(sync, step, args.iters, args.warmup, args.time_limit)
        return {"ms": sig(ms), "iters": runs, "peak_bytes": peak(step) if peak else None,
                "activity": self.optional(f"{what}: CUDA activity", lambda: cuda_activity(sync, step)) if cuda else None}

    def engine_training(self, train_param: pb.NetParameter, weights: str) -> None:
        """Time, peak memory, GPU activity and per-layer times of SGDSolver steps; the trained weights go
        to ``weights``; the solver is freed before inference is measured."""
        args, device = self.args, self.device
        with PeakMemory(device) as memory:
            engine = EngineTraining(train_param, device, args.seed, args.math)
            engine.step()  # first step: kernels compiled, buffers allocated
            peak = memory.measure(engine.step)
        net = engine.net
        self.report["net"] = {"name": net.name, "layers": len(net.layers),
                              "learnable_values": int(sum(p.blob.count for p in net.learnable_params))}
        section = self.report["train"]
        section["shape"] = list(net.blobs["data"].shape)
        section["conv_gflop"] = sig(conv_flops(net, training=True) / 1e9)
        section["engine"] = self.timed("memnet-engine training", device.sync, engine.step, device.cupy is not None)
        section["engine"]["peak_bytes"] = peak
        self.save()
        iters = max(1, min(args.iters, 5))
        prof = self.optional("me.profile() of training steps", lambda: engine.profiled(iters))
        times = {kind: [t / iters for t in ms] for kind, ms in prof.layer_times.items()} if prof else {}
        self.report["layer_types"] = {kind: {"forward_ms": sig(f), "backward_ms": sig(b)}
                                      for kind, (f, b) in sorted(times.items(), key=lambda kv: -sum(kv[1]))}
        if prof:
            section["engine"]["profile"] = {"steps": iters, "launches_per_step": prof.launches / iters,
                                            "transfers_per_step": prof.transfers / iters,
                                            "launches_by_kind": prof.launches_by_kind, "complete": prof.complete,
                                            "report": prof.report()}
        # a BatchNorm unit fused into its convolution is timed with it (a slight overestimate of conv time)
        conv_times = [sum(times[kind]) for kind in ("Convolution", "BatchNorm+Scale+ReLU+Convolution") if kind in times]
        if conv_times:
            section["engine"]["conv_ms"] = sig(sum(conv_times))
        net.save(weights)
        engine = net = None  # the training net goes before inference is measured
        device.free()

    def engine_inference(self, key: str, deploy_param: pb.NetParameter, weights: "str | None") -> None:
        args, device = self.args, self.device
        with PeakMemory(device) as memory:
            engine = EngineInference(deploy_param, device, weights, args.seed, args.math)
            engine.step()
            peak = memory.measure(engine.step)
        section = self.report["infer"][key]
        section["shape"] = list(engine.net.blobs["data"].shape)
        section["conv_gflop"] = sig(conv_flops(engine.net, training=False) / 1e9)
        section["engine"] = self.timed(f"memnet-engine inference {key}", device.sync, engine.step,
                                       device.cupy is not None)
        section["engine"]["peak_bytes"] = peak
        section["engine"]["conv_ms"] = self.optional(
            f"convolution layers alone, inference {key}", lambda: sig(conv_forward_ms(engine.net, device, engine.step)))
        engine = None
        device.free()

    def torch_training(self, tdev: TorchDevice) -> None:
        bench = TorchTraining(self.args, tdev, self.report["train"]["shape"])
        self.report["train"]["torch"] = self.timed("PyTorch training", tdev.sync, bench.step, tdev.cuda,
                                                   tdev.peak_bytes)
        if not np.isfinite(bench.step()):
            self.warn("PyTorch's training loss is not finite: its timings may include NaN/inf arithmetic")
        bench = None
        tdev.free()

    def torch_inference(self, tdev: TorchDevice, key: str) -> None:
        section = self.report["infer"][key]
        bench = TorchInference(self.args, tdev, section["shape"])
        section["torch"] = self.timed(f"PyTorch inference {key}", tdev.sync, bench.step, tdev.cuda, tdev.peak_bytes)
        bench = None
        tdev.free()

    def interleaved_phases(self, train_param: pb.NetParameter, deploy_params: dict, weights: "str | None",
                           tdev: TorchDevice) -> None:
        """Every phase again, memnet-engine's and PyTorch's steps timed in turn (``interleaved_ms``)."""
        args, device, report = self.args, self.device, self.report
        phases = {"train": lambda: (EngineTraining(train_param, device, args.seed, args.math),
                                    TorchTraining(args, tdev, report["train"]["shape"]))}
        for key, param in deploy_params.items():
            phases[key] = lambda param=param, key=key: (EngineInference(param, device, weights, args.seed, args.math),
                                                        TorchInference(args, tdev, report["infer"][key]["shape"]))
        for key, build in phases.items():
            self.attempt(f"interleaved {key}", lambda key=key, build=build: self._interleaved(key, *build(), tdev))

    def _interleaved(self, key: str, engine, torch_bench, tdev: TorchDevice) -> None:
        print(f"bench_memnet: interleaved {key}", file=sys.stderr, flush=True)
        times = interleaved_ms((self.device.sync, engine.step), (tdev.sync, torch_bench.step), self.args.iters,
                               max(1, self.args.warmup))
        self.report["interleaved"][key] = {"rounds": times["rounds"], "engine_ms": times["first_ms"],
                                           "torch_ms": times["second_ms"],
                                           **{k: v for k, v in times.items() if k.startswith("ratio")}}
        engine = torch_bench = None
        self.device.free()
        tdev.free()

    def derive(self) -> None:
        """Ratios, TFLOP/s and the fraction of the GEMM peak, from the measured times."""
        peaks = self.report["gemm_peak"]
        for section in [self.report["train"], *self.report["infer"].values()]:
            for who in ("engine", "torch"):
                row = section.get(who)
                if not row or "conv_gflop" not in section:
                    continue
                row["conv_tflops"] = sig(section["conv_gflop"] / row["ms"])
                peak = (peaks.get(who) or {}).get("tflops")
                row["gemm_fraction"] = sig(row["conv_tflops"] / peak) if peak else None
                if row.get("conv_ms"):  # the convolution layers alone (engine): their share of the GEMM peak
                    row["conv_only_tflops"] = sig(section["conv_gflop"] / row["conv_ms"])
                    row["conv_only_gemm_fraction"] = sig(row["conv_only_tflops"] / peak) if peak else None
            if section.get("engine") and section.get("torch"):
                engine, torch = section["engine"], section["torch"]
                section["ratio"] = {"time": sig(engine["ms"] / torch["ms"]),
                                    "peak_bytes": _ratio(engine["peak_bytes"], torch["peak_bytes"]),
                                    "kernels": _ratio(*((row.get("activity") or {}).get("kernels")
                                                        for row in (engine, torch)))}


def _ratio(a, b) -> "float | None":
    return sig(a / b) if a and b else None


# ---------------------------------------------------------------------------------------- output
def _cell(value, fmt: str) -> str:
    return f"{'n/a':>14}" if value is None else f"{value:{fmt}}"


def print_report(report: dict) -> None:
    sections = [(f"training step {report['train']['shape']}", report["train"])]
    sections += [(f"inference {key}", section) for key, section in report["infer"].items()]
    has_torch = any(section.get("torch") for _, section in sections)
    peaks = {who: p for who, p in report["gemm_peak"].items() if p}
    if peaks:
        text = ", ".join(f"{'memnet-engine' if who == 'engine' else 'PyTorch'} {p['tflops']:.2f} TFLOP/s"
                         for who, p in peaks.items())
        size = next(iter(peaks.values()))["size"]
        print(f"GEMM peak, one {size}x{size} float32 matmul on this device: {text}")
    print(f"{'':30}{'memnet-engine':>14}" + (f"{'PyTorch':>14}{'us/PyTorch':>14}" if has_torch else ""))
    rows = (("time (ms)", lambda r: r["ms"], "14.2f", "time"),
            ("conv TFLOP/s", lambda r: r.get("conv_tflops"), "14.3f", None),
            ("% of GEMM peak", lambda r: None if r.get("gemm_fraction") is None else 100 * r["gemm_fraction"],
             "14.1f", None),
            ("conv layers alone TFLOP/s", lambda r: r.get("conv_only_tflops"), "14.3f", None),
            ("  % of GEMM peak", lambda r: None if r.get("conv_only_gemm_fraction") is None
             else 100 * r["conv_only_gemm_fraction"], "14.1f", None),
            ("peak memory (MiB)", lambda r: None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20,
             "14.1f", "peak_bytes"),
            ("kernel launches", lambda r: (r.get("activity") or {}).get("kernels"), "14d", "kernels"),
            ("device-to-host copies", lambda r: (r.get("activity") or {}).get("memcpy_dtoh"), "14d", None))
    for title, section in sections:
        measured = [section.get(who) for who in ("engine", "torch")[:1 + has_torch]]
        if not any(measured):
            continue
        flop = f"  ({section['conv_gflop']:.2f} conv GFLOP)" if "conv_gflop" in section else ""
        print(f"{title}{flop}")
        for label, get, fmt, ratio_key in rows:
            cells = [get(row) if row else None for row in measured]
            if all(c is None for c in cells):
                continue
            line = f"  {label:28}" + "".join(_cell(c, fmt) for c in cells)
            ratio = (section.get("ratio") or {}).get(ratio_key) if ratio_key else None
            if ratio is not None:
                line += f"{ratio:14.2f}"
            print(line)
    print("(peak memory: memnet-engine GPU = CuPy pool bytes in use, CPU = tracemalloc bytes since the phase's "
          "net was built; PyTorch GPU = max_memory_allocated; launches and copies: CUDA profiler, one step)")
    print("(conv GFLOP: direct convolution's 2 * K * C * kh * kw per output; on the CPU memnet-engine runs 3x3 "
          "stride-1 convolutions by Winograd F(2x2,3x3), 2.25x fewer multiplications: its TFLOP/s there are "
          "effective, and may pass the GEMM peak)")
    if report["interleaved"]:
        rounds = next(iter(report["interleaved"].values()))["rounds"]
        print(f"\ninterleaved, one memnet-engine step and one PyTorch step per round ({rounds} rounds; ms, ms, "
              "median ratio):")
        for key, row in report["interleaved"].items():
            title = "training step" if key == "train" else f"inference {key}"
            print(f"  {title:28}{row['engine_ms']:14.2f}{row['torch_ms']:14.2f}{row['ratio']:14.2f}"
                  f"   (per-round ratio {row['ratio_min']:.2f} to {row['ratio_max']:.2f})")
    profile = report["train"].get("engine", {}).get("profile")
    if profile:
        print()
        print(f"me.profile() of {profile['steps']} memnet-engine training steps (each layer synchronised; "
              "layer_types in the JSON: ms per step):")
        print(profile["report"])


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: "list[str] | None" = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="gpu", help="'gpu', 'gpu:N' or 'cpu'")
    ap.add_argument("--torch-device", help="PyTorch's device (default: --device)")
    ap.add_argument("--batch", type=int, default=64, help="training batch size")
    ap.add_argument("--patch", type=int, default=31, help="training patch size (square)")
    ap.add_argument("--size", type=int, nargs="+", default=[288], help="inference image sizes (square, one image)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds of timed iterations per phase at most (0: no limit; at least one is timed)")
    ap.add_argument("--blocks", type=int, default=6, help="memory blocks M (of the generated net and PyTorch's)")
    ap.add_argument("--recursions", type=int, default=6, help="recursive units R per block")
    ap.add_argument("--channels", type=int, default=64, help="feature channels")
    ap.add_argument("--math", choices=["fp32", "tf32"], default="fp32",
                    help="tf32: the engine's opt-in TF32 mode and PyTorch with TF32 on")
    ap.add_argument("--gemm-size", type=int,
                    help="matrix size of the GEMM-peak measurement (default 8192 on a GPU, 2048 on the CPU; 0: skip)")
    ap.add_argument("--train-prototxt", help="use this training net instead of the generated one")
    ap.add_argument("--deploy-prototxt", help="use this deploy net instead of the generated one (--size ignored)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--interleave", action="store_true",
                    help="also time each phase with memnet-engine's and PyTorch's steps in turn (--iters rounds): "
                         "ratios that hold on a machine whose speed drifts")
    ap.add_argument("--json", action="store_true", help="print every figure as one JSON object on the last line")
    ap.add_argument("--json-file", help="also write that JSON object here, updated after every phase")
    ap.add_argument("--list-math", action="store_true", help="print the engine's math modes (JSON list) and exit")
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    for name in ("batch", "patch", "iters", "blocks", "recursions", "channels"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if min(args.size) < 1:
        ap.error("--size must be positive")
    if args.warmup < 0 or args.time_limit < 0 or (args.gemm_size or 0) < 0:
        ap.error("--warmup, --time-limit and --gemm-size must be >= 0")
    if args.interleave and args.no_torch:
        ap.error("--interleave compares with PyTorch: it cannot go with --no-torch")
    args.torch_device = args.torch_device or args.device
    if args.gemm_size is None:
        args.gemm_size = 8192 if args.device.startswith(("gpu", "cuda")) else 2048
    return args


def _nets(args, size: int) -> tuple[pb.NetParameter, pb.NetParameter]:
    train, deploy = benchmark_nets(args.blocks, args.recursions, args.channels, args.batch, args.patch, size)
    if args.train_prototxt:
        train = read_net_param(args.train_prototxt)
    if args.deploy_prototxt:
        deploy = read_net_param(args.deploy_prototxt)
    return train, deploy


def run(args, bench: Run) -> None:
    """Every phase in turn: GEMM peak, engine training, engine inference per size, then PyTorch's, then (with
    --interleave) both in turn per phase; inference uses the weights the engine's training phase saved."""
    device, report = bench.device, bench.report
    sizes = args.size[:1] if args.deploy_prototxt else args.size
    train_param = _nets(args, sizes[0])[0]
    deploy_params = {f"{size}x{size}": _nets(args, size)[1] for size in sizes}
    report["train"]["shape"] = [args.batch, 1, args.patch, args.patch]  # the net's own, once it is built
    report["infer"] = {key: {"shape": [1, 1, size, size]} for key, size in zip(deploy_params, sizes)}
    if args.gemm_size:
        report["gemm_peak"]["engine"] = bench.optional("GEMM peak", lambda: gemm_peak(device, args.gemm_size))
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "trained.caffemodel")
        if not bench.attempt("memnet-engine training", lambda: bench.engine_training(train_param, weights)):
            weights = None
            bench.warn("inference runs with the fillers' weights: training failed")
        for key, param in deploy_params.items():
            bench.attempt(f"memnet-engine inference {key}",
                          lambda key=key, param=param: bench.engine_inference(key, param, weights))
        if not args.no_torch:
            import torch

            set_torch_math(torch, args.math)
            tdev = TorchDevice(torch, args.torch_device)
            if args.gemm_size:
                report["gemm_peak"]["torch"] = bench.optional("PyTorch GEMM peak",
                                                              lambda: torch_gemm_peak(tdev, args.gemm_size))
            bench.attempt("PyTorch training", lambda: bench.torch_training(tdev))
            for key in deploy_params:
                bench.attempt(f"PyTorch inference {key}", lambda key=key: bench.torch_inference(tdev, key))
            if args.interleave:
                bench.interleaved_phases(train_param, deploy_params, weights, tdev)
    bench.derive()


def main(argv: "list[str] | None" = None) -> int:
    args = parse_args(argv)
    if args.list_math:
        print(json.dumps(engine_math_modes()))
        return 0
    bench = None
    try:
        if not args.no_torch:
            import torch  # noqa: F401
        math_kwargs(args.math)
        bench = Run(args, Device(args.device))
        run(args, bench)
    except ImportError as ex:
        return _fail(bench, f"{ex} (install PyTorch, or pass --no-torch)")
    except (BenchError, MemnetError, ValueError, RuntimeError, OSError) as ex:
        return _fail(bench, str(ex))
    report = bench.report
    report["complete"] = not report["errors"]
    bench.save()
    s = report["settings"]
    net = report.get("net") or {"name": "?", "layers": "?", "learnable_values": "?"}
    print(f"MemNet {net['name']}: {net['layers']} layers, {net['learnable_values']} learnable values | "
          f"{report['device']['name']} | float32, math {s['math']} | median of up to {s['iters']} after "
          f"{s['warmup']} warm-up")
    print()
    print_report(report)
    for error in report["errors"]:
        print(f"FAILED: {error.splitlines()[0][:500]}")
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    return 0 if report["complete"] else 1


def _fail(bench: "Run | None", message: str) -> int:
    """One line on stderr; the figures measured so far stay in --json-file, with the error."""
    print(f"bench_memnet: {message}", file=sys.stderr)
    if bench is not None:
        bench.report["error"] = message
        bench.save()
    return 1


if __name__ == "__main__":
    sys.exit(main())
