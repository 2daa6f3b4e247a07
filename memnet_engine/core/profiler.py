"""``me.profile()``: what some engine work asks of the device, like ``caffe time`` or ``torch.profiler``.

>>> with me.profile() as prof:
...     solver.step(1)
>>> print(prof.report())
>>> prof.launches, prof.transfers, prof.peak_bytes, prof.layer_times["Convolution"]

Counted while the block runs: kernel launches, device-to-host transfers, the peak of live device
bytes (GPU: CuPy's memory pool, through a MemoryHook; CPU: NumPy allocations, through tracemalloc)
and the milliseconds of each layer type's forward and backward (the device is synchronised around
every layer, only while profiling, so the whole block runs slower than it would).

What is counted depends on the device: on a real GPU only what memnet-engine's own wrappers launch
(RawKernels, by name, and cuBLAS GEMMs) and the transfers of ``to_numpy`` are seen; CuPy's own
element-wise/reduction kernels, memsets and copies are not (CuPy has no hook for them), and
``complete`` is False.  On the kernel emulator of the tests (``tests/gpu/cuda_emulator``) every
launch and transfer is counted (``complete`` is True).  On the CPU nothing is launched.
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Iterator

active: "Profile | None" = None  # the profile being recorded; the engine's hooks check it
KIND_LABELS = {"kernel": "RawKernel", "blas": "cuBLAS", "elementwise": "CuPy element-wise",
               "reduction": "CuPy reductions", "memset": "memsets", "copy": "copies"}


class Profile:
    """What ``profile()`` recorded (filled in when its block ends)."""

    def __init__(self):
        self.kernels: Counter = Counter()  # our RawKernel launches by "family/name"
        self.gemms = 0                      # our cuBLAS calls
        self.launches_by_kind: dict[str, int] = {}
        self.transfers = 0                  # device-to-host
        self.complete = False               # launches and transfers include CuPy's own (emulator only)
        self.peak_bytes: "int | None" = None
        self.layer_times: "defaultdict[str, list[float]]" = defaultdict(lambda: [0.0, 0.0])  # ms fwd, bwd
        self.wall_ms = 0.0

    @property
    def launches(self) -> int:
        """Kernel launches counted (of every kind on the emulator; ours only on a real GPU)."""
        return sum(self.launches_by_kind.values())

    # ------------------------------------------------------------------ hooks the engine calls
    def record_kernel(self, family: str, name: str) -> None:
        self.kernels[f"{family}/{name}"] += 1

    def record_gemm(self) -> None:
        self.gemms += 1

    def record_transfer(self) -> None:
        self.transfers += 1

    # ------------------------------------------------------------------ report
    def report(self) -> str:
        kinds = ", ".join(f"{KIND_LABELS.get(kind, kind)} {n}" for kind, n in self.launches_by_kind.items() if n)
        lines = [f"memnet-engine profile: {self.wall_ms:.2f} ms",
                 f"  kernel launches: {self.launches} ({kinds or 'none'})",
                 f"  device-to-host transfers: {self.transfers}",
                 f"  peak memory: {'n/a' if self.peak_bytes is None else f'{self.peak_bytes / 2**20:.1f} MiB'}"]
        if not self.complete and self.launches:
            lines.append("  (real GPU: CuPy's own element-wise/reduction kernels, memsets and copies, and transfers "
                         "outside to_numpy, are not counted)")
        if self.layer_times:
            total = sum(f + b for f, b in self.layer_times.values()) or 1.0
            width = max(16, *(len(kind) + 2 for kind in self.layer_times))
            lines.append(f"  {'layer type':{width}}{'forward ms':>12}{'backward ms':>13}{'share':>8}")
            for kind, (fwd, bwd) in sorted(self.layer_times.items(), key=lambda kv: -sum(kv[1])):
                lines.append(f"  {kind:{width}}{fwd:12.2f}{bwd:13.2f}{100 * (fwd + bwd) / total:7.1f}%")
        return "\n".join(lines)


def _cupy():
    """The CuPy module the engine runs on, if it was imported (None on a CPU-only run)."""
    return sys.modules.get("cupy")


def synchronize(on_gpu: bool) -> None:
    if on_gpu:
        _cupy().cuda.get_current_stream().synchronize()


class _LayerTimer:
    """Adds the synchronised time of one layer call to the active profile."""

    __slots__ = ("layer", "column", "start")

    def __init__(self, layer, column: int):
        self.layer, self.column = layer, column

    def __enter__(self) -> None:
        synchronize(self.layer.on_gpu)
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        synchronize(self.layer.on_gpu)
        if active is not None:
            active.layer_times[self.layer.type][self.column] += (time.perf_counter() - self.start) * 1e3


class _NoTimer:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


_NO_TIMER = _NoTimer()


def layer_timer(layer, backward: bool = False):
    """A context that times ``layer``'s forward (or backward) when profiling, else does nothing."""
    return _NO_TIMER if active is None else _LayerTimer(layer, int(backward))


@contextmanager
def _peak_device_bytes(cupy, profile: Profile) -> Iterator[None]:
    """The peak of CuPy pool bytes in use while the block runs, into ``profile.peak_bytes``."""
    class Peak(cupy.cuda.memory_hook.MemoryHook):
        name = "memnet_profile_peak"

        def __init__(self, live: int):
            self.live = self.peak = live

        def malloc_postprocess(self, **kw):
            self.live += kw["mem_size"]
            self.peak = max(self.peak, self.live)

        def free_postprocess(self, **kw):
            self.live -= kw["mem_size"]

    with Peak(cupy.get_default_memory_pool().used_bytes()) as hook:
        yield
    profile.peak_bytes = hook.peak


@contextmanager
def _peak_host_bytes(profile: Profile) -> Iterator[None]:
    """The peak of traced Python/NumPy allocations while the block runs (above what was live before)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield
        profile.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        if started:
            tracemalloc.stop()


@contextmanager
def profile(device: "str | None" = None) -> Iterator[Profile]:
    """Record a Profile of the work in the ``with`` block.

    ``device`` ('cpu' or 'gpu') says whose memory to watch; by default the GPU's once CuPy is in use.
    """
    global active
    if active is not None:
        raise RuntimeError("profiles cannot be nested")
    result = Profile()
    cupy = _cupy()
    on_gpu = cupy is not None and not str(device).lower().startswith("cpu")
    emulator = getattr(cupy, "events", None) if on_gpu else None
    before = dict(emulator) if emulator is not None else {}
    memory = _peak_device_bytes(cupy, result) if on_gpu else _peak_host_bytes(result)
    start = time.perf_counter()
    active = result
    try:
        with memory:
            yield result
            synchronize(on_gpu)
    finally:
        active = None
        result.wall_ms = (time.perf_counter() - start) * 1e3
    if emulator is not None:
        counted = {kind: emulator[kind] - before.get(kind, 0) for kind in cupy.LAUNCH_KINDS}
        result.launches_by_kind = counted
        result.transfers = emulator["d2h"] - before.get("d2h", 0)
        result.complete = True
    else:
        result.launches_by_kind = {"kernel": sum(result.kernels.values()), "blas": result.gemms}
