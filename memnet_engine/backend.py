"""Array-module selection: NumPy on the CPU, CuPy on the GPU.

Layer code that is the same on both devices is written once against ``xp = array_module(x)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

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


def get_array_module(x: Any):
    """numpy or cupy, whichever owns array ``x``."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    return cupy_module().get_array_module(x)


def to_numpy(x: Any) -> np.ndarray:
    """A host (NumPy) copy or view of a NumPy or CuPy array."""
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)
