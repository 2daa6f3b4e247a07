"""Array-module selection: NumPy on the CPU, CuPy on the GPU.

Layer code that is the same on both devices is written once against ``xp = array_module(x)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import profiler

CPU = "cpu"
GPU = "gpu"


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' | 'gpu' | 'gpu:1' | 'cuda:1' -> (kind, id)."""
    kind, _, ident = str(device).lower().partition(":")
    if kind == "cuda":
        kind = GPU
    if kind not in (CPU, GPU):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu' (optionally 'gpu:ID')")
    return kind, int(ident) if ident else 0


def cupy_module():
    """Import CuPy or raise a clear error."""
    try:
        import cupy
    except ImportError as ex:  # pragma: no cover - depends on the machine
        raise RuntimeError("device='gpu' needs CuPy: pip install 'memnet-engine[gpu]'") from ex
    return cupy


def array_module(kind: str):
    """The array module (numpy or cupy) for a device kind."""
    return cupy_module() if kind == GPU else np


_HOST_ASSIGNABLE: dict = {}


def host_assignable(xp):
    """The ndarray class a GPU blob hands out: CuPy's, whose item assignment also takes NumPy arrays.

    CuPy refuses ``device_array[...] = numpy_array``; pycaffe users write ``blob.data[...] = array``.
    This subclass copies such values to the device first.  ``xp`` is the CuPy module.
    """
    cls = _HOST_ASSIGNABLE.get(xp)
    if cls is None:
        class DeviceArray(xp.ndarray):
            def __setitem__(self, key, value):
                if isinstance(value, np.ndarray) and value.ndim:
                    value = xp.asarray(value)
                super().__setitem__(key, value)

        cls = _HOST_ASSIGNABLE[xp] = DeviceArray
    return cls


def get_array_module(x: Any):
    """numpy or cupy, whichever owns array ``x``."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    return cupy_module().get_array_module(x)


def to_numpy(x: Any) -> np.ndarray:
    """A host (NumPy) copy or view of a NumPy or CuPy array."""
    if hasattr(x, "get"):
        if profiler.active is not None:
            profiler.active.record_transfer()
        return x.get()
    return np.asarray(x)
