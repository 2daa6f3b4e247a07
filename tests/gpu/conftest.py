"""GPU tests.  Every test that takes the ``gpu`` fixture runs on two backends:

- ``cuda``: real CuPy on a CUDA device.  Marked ``gpu``; skipped when CuPy cannot be imported or
  ``cupy.cuda.runtime.getDeviceCount()`` fails or finds no device.
- ``emulated``: the same engine code with ``import cupy`` answered by cuda_emulator.fake_cupy,
  which runs the real kernels/*.cu compiled with g++ on the CPU (checking argument types, bounds,
  launch limits).  Skipped when no C++ compiler is found.  It tests the kernels' arithmetic and
  indexing and all the Python around them, not GPU concurrency or timing.
"""
from __future__ import annotations

import pytest

from .cuda_emulator import build, fake_cupy


def _cuda_unavailable() -> "str | None":
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as ex:  # ImportError, CUDARuntimeError, missing driver...
        return f"CuPy with a CUDA device is not available ({type(ex).__name__}: {ex})"
    return None if count > 0 else "no CUDA device"


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulated"])
def gpu(request):
    """The ``cupy`` module the engine will use (real, or the CPU emulation)."""
    if request.param == "cuda":
        reason = _cuda_unavailable()
        if reason:
            pytest.skip(reason)
        import cupy

        yield cupy
        return
    if not build.compiler_available():
        pytest.skip(f"no C++ compiler ({build.CXX}) to build the kernel emulator")
    previous = fake_cupy.install()
    try:
        yield fake_cupy
    finally:
        fake_cupy.uninstall(previous)



@pytest.fixture
def emulated(gpu):
    """The emulator only (its own checks; counts of launches and transfers)."""
    if not hasattr(gpu, "install"):
        pytest.skip("emulator only")
    return gpu
