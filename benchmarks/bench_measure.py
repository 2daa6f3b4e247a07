"""Measuring on one device for the benchmarks: synchronisation, median times, peak memory, what a
step puts on the GPU (CUDA profiler) and the GEMM peak, for memnet-engine (NumPy / CuPy) and PyTorch."""
from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from typing import Callable

import numpy as np

import memnet_engine as me


def sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (JSON figures without noise, small ones kept)."""
    return float(f"{value:.{digits}g}")


# ---------------------------------------------------------------------------------------- devices
class Device:
    """The device memnet-engine runs on ('cpu', 'gpu' or 'gpu:N'): synchronisation, memory, its name."""

    def __init__(self, spec: str):
        self.spec = spec
        self.kind, self.index = me.core.backend.parse_device(spec)
        self.cupy = None
        if self.kind == "gpu":
            self.cupy = me.core.backend.cupy_module()
            self.cupy.cuda.Device(self.index).use()
        self.xp = self.cupy if self.cupy is not None else np

    def sync(self) -> None:
        """Wait for memnet-engine's (CuPy's) queued GPU work."""
        if self.cupy is not None:
            self.cupy.cuda.get_current_stream().synchronize()

    def free(self) -> None:
        """Drop unreachable arrays and return CuPy's cached blocks, so the next phase starts empty."""
        gc.collect()
        if self.cupy is not None:
            self.sync()
            self.cupy.get_default_memory_pool().free_all_blocks()

    def name(self) -> str:
        if self.cupy is None:
            import platform

            return f"CPU ({platform.processor() or platform.machine()})"
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


class TorchDevice:
    """The device PyTorch runs on; every CUDA call names it (gpu:N is device N, not the current one)."""

    def __init__(self, torch, spec: str):
        kind, index = me.core.backend.parse_device(spec)
        self.torch = torch
        self.dev = torch.device("cuda", index) if kind == "gpu" else torch.device("cpu")
        self.cuda = self.dev.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def peak_bytes(self, step: Callable[[], object]) -> "int | None":
        """Most bytes PyTorch's allocator held during ``step``, counting what was allocated before it."""
        if not self.cuda:
            return None
        self.sync()
        self.torch.cuda.reset_peak_memory_stats(self.dev)
        step()
        self.sync()
        return int(self.torch.cuda.max_memory_allocated(self.dev))

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.sync()
            self.torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------- measuring
def median_ms(sync: Callable[[], None], step: Callable[[], object], iters: int, warmup: int,
              time_limit: float = 0.0) -> tuple[float, int]:
    """(median wall time of ``step`` in ms, timed runs), ``sync`` around each run.  With ``time_limit``
    (seconds), timing stops once that much has been spent (after at least one timed run)."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < iters:
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
        if time_limit and time.perf_counter() - began > time_limit:
            break
    return statistics.median(times), len(times)


def interleaved_ms(first: tuple[Callable[[], None], Callable[[], object]],
                   second: tuple[Callable[[], None], Callable[[], object]], rounds: int, warmup: int) -> dict:
    """Two (sync, step) pairs timed in turn, one step of each per round: each side's median (ms) and the
    median, min and max over rounds of first / second.  A machine whose speed drifts (a noisy neighbour)
    slows both steps of a round alike, so the ratio holds where the two sides' separate medians do not."""
    for _ in range(warmup):
        first[1]()
        second[1]()
    times: list[tuple[float, float]] = []
    for _ in range(rounds):
        pair = []
        for sync, step in (first, second):
            sync()
            start = time.perf_counter()
            step()
            sync()
            pair.append((time.perf_counter() - start) * 1e3)
        times.append((pair[0], pair[1]))
    ratios = [a / b for a, b in times]
    return {"rounds": rounds, "first_ms": sig(statistics.median(a for a, _ in times)),
            "second_ms": sig(statistics.median(b for _, b in times)), "ratio": sig(statistics.median(ratios)),
            "ratio_min": sig(min(ratios)), "ratio_max": sig(max(ratios))}


class PeakMemory:
    """Peak bytes in use during one step of a phase, counting what the phase keeps between steps.

    GPU: the bytes of CuPy's pool in use when the step starts plus the most the step adds (a CuPy
    memory hook); earlier phases are freed first, so that baseline is this phase's own state.
    CPU: bytes traced by tracemalloc (NumPy data included) since the ``with`` began, which must be
    before the phase's net is built.
    """

    def __init__(self, device: Device):
        self.device = device
        self.traced = device.cupy is None

    def __enter__(self) -> "PeakMemory":
        if self.traced:
            import tracemalloc

            tracemalloc.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.traced:
            import tracemalloc

            tracemalloc.stop()

    def measure(self, step: Callable[[], object]) -> int:
        """``step()``'s peak as ``me.profile()`` records it (GPU: pool bytes in use at the start plus the most
        the step adds; CPU: the traced peak, tracing having begun with this ``with``)."""
        import memnet_engine as me

        self.device.sync()
        with me.profile(device="cpu" if self.traced else "gpu") as prof:
            step()
        return int(prof.peak_bytes)


def cuda_activity(sync: Callable[[], None], step: Callable[[], object]) -> "dict | None":
    """What one ``step`` puts on the GPU, from the CUDA profiler (CUPTI through torch.profiler, which sees
    every kernel of the process, CuPy's and cuBLAS's too; see ``kernel_summary``).  None without
    PyTorch or a CUDA device."""
    try:
        import torch
        from torch.profiler import ProfilerActivity
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    summary = kernel_summary(trace_events(sync, step, [ProfilerActivity.CUDA]))
    if not summary["kernels"]:  # a step always launches kernels: the profiler did not see them
        raise RuntimeError("the CUDA profiler recorded no kernel (CUPTI unavailable?)")
    return summary


def trace_events(sync: Callable[[], None], step: Callable[[], object], activities: list) -> list[dict]:
    """The events torch.profiler records over one ``step``, read back from its Chrome trace export."""
    from torch.profiler import profile

    sync()
    with tempfile.TemporaryDirectory() as tmp:
        with profile(activities=activities) as prof:
            step()
            sync()
        trace = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace, encoding="utf-8") as f:
            events = json.load(f)
    return events.get("traceEvents", []) if isinstance(events, dict) else events


def kernel_summary(events: list[dict]) -> dict:
    """Kernel launches, copies and memsets (device-to-host copies are host synchronisations), the kernels'
    GPU time, and the kernels that took longest, from Chrome-trace events ("cat": "kernel", ...)."""
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_kind[str(event.get("cat", "")).lower()].append(event)
    per_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in by_kind["kernel"]:
        entry = per_name[str(event.get("name", "?"))]
        entry[0] += 1
        entry[1] += float(event.get("dur", 0.0)) / 1e3
    top = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:8]
    copies = by_kind["gpu_memcpy"]
    return {
        "kernels": len(by_kind["kernel"]),
        "memcpy": len(copies),
        "memcpy_dtoh": sum("dtoh" in str(e.get("name", "")).lower() for e in copies),
        "memset": len(by_kind["gpu_memset"]),
        "kernel_ms": sig(sum(t for _, t in per_name.values())),
        "top_kernels": [{"name": name[:120], "count": count, "ms": sig(ms)} for name, (count, ms) in top],
    }


def _gemm_figures(size: int, sync: Callable[[], None], step: Callable[[], object], iters: int) -> dict:
    ms, runs = median_ms(sync, step, iters, warmup=1)
    return {"size": size, "ms": sig(ms), "iters": runs, "tflops": sig(2.0 * size ** 3 / ms / 1e9)}


def gemm_peak(device: Device, size: int, iters: int = 5) -> dict:
    """TFLOP/s of one ``size`` x ``size`` float32 matrix product through the engine's GEMM path
    (cuBLAS on a GPU, NumPy's BLAS on the CPU), on random data, median of ``iters``; then the
    matrices are freed."""
    rng = np.random.default_rng(7)
    a, b = (device.xp.asarray(rng.random((size, size), dtype=np.float32) - 0.5) for _ in range(2))
    out = device.xp.empty((size, size), np.float32)
    if device.cupy is not None:
        from memnet_engine.core.cuda.gemm import gemm

        figures = _gemm_figures(size, device.sync, lambda: gemm(a, b, out), iters)
    else:
        figures = _gemm_figures(size, device.sync, lambda: np.matmul(a, b, out=out), iters)
    a = b = out = None
    device.free()
    return figures


def torch_gemm_peak(tdev: TorchDevice, size: int, iters: int = 5) -> dict:
    """The same for PyTorch's matmul on its device (TF32 as set in torch.backends)."""
    torch = tdev.torch
    a, b = (torch.rand((size, size), device=tdev.dev) - 0.5 for _ in range(2))
    figures = _gemm_figures(size, tdev.sync, lambda: torch.matmul(a, b), iters)
    a = b = None
    tdev.free()
    return figures
