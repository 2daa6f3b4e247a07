#!/usr/bin/env python3
"""Run a Python script with ``import cupy`` answered by the CPU kernel emulator (tests/gpu/cuda_emulator):
``python benchmarks/run_emulated.py SCRIPT [ARGS...]`` runs SCRIPT as ``__main__`` with ARGS, so that its
``--device gpu`` runs the real kernels/*.cu (compiled with g++) on the CPU.  Used by gpu_suite.py --emulate.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip())
    sys.path.insert(0, str(REPO))
    from tests.gpu.cuda_emulator import build, fake_cupy

    if not build.compiler_available():
        sys.exit(f"run_emulated: no C++ compiler ({build.CXX}) to build the kernel emulator")
    fake_cupy.install()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
