#!/usr/bin/env python3
"""The GPU suite's first two stages, each run in its own process by benchmarks/gpu_suite.py.

  suite_probe.py environment --json FILE [--emulate]   versions of everything the GPU path uses; exit 1
                                                       if the package, a dependency or the CUDA device is missing
  suite_probe.py kernels --json FILE [--emulate]       compile every kernel of kernels/*.cu through the engine's
                                                       loader (NVRTC on a GPU, g++ on the emulator); exit 1 on
                                                       any compile error, whose compiler log goes to FILE

Every probe is guarded: an API that this CuPy or driver lacks is reported as such, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_DEPENDENCIES = ("numpy", "scipy", "google.protobuf", "PIL", "h5py", "tqdm", "skimage", "matplotlib")


def guarded(probe):
    """``probe()``, or the error it raised as text (a probe must never stop the others)."""
    try:
        return probe()
    except Exception as ex:  # any API difference or driver error is a finding, not a crash
        return f"unavailable ({type(ex).__name__}: {str(ex).strip()[:300]})"


def install_emulator() -> None:
    sys.path.insert(0, str(REPO))
    from tests.gpu.cuda_emulator import fake_cupy

    fake_cupy.install()


def _version(module: str):
    return getattr(importlib.import_module(module), "__version__", "?")


def _cupy_facts(cupy) -> dict:
    runtime = cupy.cuda.runtime
    count = runtime.getDeviceCount()
    facts = {"version": getattr(cupy, "__version__", "emulator"), "device_count": count}
    if count < 1:
        return facts
    device = cupy.cuda.Device(0)
    props = runtime.getDeviceProperties(device.id)
    name = props.get("name", "?")
    facts.update({
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": guarded(lambda: device.compute_capability),
        "total_memory_gib": guarded(lambda: round(props["totalGlobalMem"] / 2**30, 1)),
        "multiprocessors": guarded(lambda: props["multiProcessorCount"]),
        "driver_version": guarded(lambda: runtime.driverGetVersion()),
        "runtime_version": guarded(lambda: runtime.runtimeGetVersion()),
        "local_runtime_version": guarded(lambda: cupy.cuda.get_local_runtime_version()),
        "nvrtc_version": guarded(lambda: cupy.cuda.nvrtc.getVersion()),
    })
    return facts


def _torch_facts() -> dict:
    import torch

    facts = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if facts["cuda_available"]:
        facts["device"] = torch.cuda.get_device_name(0)
        facts["cudnn"] = guarded(lambda: torch.backends.cudnn.version())
    return facts


def _nvidia_smi() -> str:
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,temperature.gpu,utilization.gpu"
    result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=20)
    return (result.stdout or result.stderr).strip()


def environment(emulate: bool) -> tuple[dict, list[str]]:
    """(facts, problems): versions and devices; problems are what makes the GPU path unusable here."""
    problems = []
    facts = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
             "cpus": os.cpu_count(), "mode": "emulate" if emulate else "cuda"}
    try:
        import memnet_engine
        from memnet_engine.core.cuda.loader import kernel_dir

        facts["memnet_engine"] = {"version": memnet_engine.__version__, "file": memnet_engine.__file__,
                                  "kernels": str(kernel_dir())}
    except Exception as ex:
        problems.append(f"memnet_engine does not import: {type(ex).__name__}: {ex}")
    facts["packages"] = {}
    for module in ENGINE_DEPENDENCIES + ("pytest",):
        version = guarded(lambda m=module: _version(m))
        facts["packages"][module] = version
        if str(version).startswith("unavailable"):
            problems.append(f"{module} is missing: {version}")
    facts["cupy"] = guarded(lambda: _cupy_facts(importlib.import_module("cupy")))
    if emulate and isinstance(facts["cupy"], dict):
        facts["cupy"]["version"] = "fake_cupy (CPU kernel emulator)"
    if isinstance(facts["cupy"], str):
        problems.append(f"CuPy: {facts['cupy']}")
    elif facts["cupy"].get("device_count", 0) < 1:
        problems.append("CuPy sees no CUDA device")
    facts["torch"] = guarded(_torch_facts)
    if not emulate:
        facts["nvidia_smi"] = guarded(_nvidia_smi)
        facts["pytest_timeout_plugin"] = guarded(lambda: _version("pytest_timeout"))
    return facts, problems


def compile_kernels() -> tuple[dict, list[str]]:
    """({family: seconds or error text}, problems): every name of loader.KERNELS, float and double."""
    import numpy as np

    from memnet_engine.core.backend import cupy_module
    from memnet_engine.core.cuda.loader import KERNELS, get_kernel

    cupy_module()  # no CuPy: one clear error, not one per family
    families, problems = {}, []
    for family, names in KERNELS.items():
        start = time.perf_counter()
        try:
            for name in names:
                for dtype in (np.float32, np.float64):
                    get_kernel(family, name, dtype)
            families[family] = {"ok": True, "seconds": round(time.perf_counter() - start, 2), "kernels": len(names)}
        except Exception as ex:  # NVRTC's CompileException carries the compiler log: report it whole
            text = f"{type(ex).__name__}: {ex}"
            families[family] = {"ok": False, "error": text[:6000]}
            problems.append(f"{family}: {text.splitlines()[0][:300] if text else type(ex).__name__}")
    return families, problems


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["environment", "kernels"])
    ap.add_argument("--json", required=True, help="write the findings here")
    ap.add_argument("--emulate", action="store_true", help="answer 'import cupy' with the CPU kernel emulator")
    args = ap.parse_args(argv)
    if args.emulate:
        install_emulator()
    if args.what == "environment":
        facts, problems = environment(args.emulate)
    else:
        result = guarded(compile_kernels)
        facts, problems = ({}, [f"the kernel loader failed: {result}"]) if isinstance(result, str) else result
    Path(args.json).write_text(json.dumps({"facts": facts, "problems": problems}, indent=1, default=str))
    print(json.dumps(facts, indent=1, default=str))
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
