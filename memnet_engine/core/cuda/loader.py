"""Finds, compiles (NVRTC through ``cupy.RawModule``, once per family and device) and launches kernels.

Every kernel in ``kernels/<family>.cu`` is a C++ template on its element type, instantiated for
float and double through RawModule *name expressions* (``"im2col<float>"``).  ``KERNELS`` is the
one list of what each family defines: the loader instantiates exactly these names, and the NVRTC
compile test (tests/test_kernels_compile.py) compiles the same source with the same names.

Scalars reach kernels as NumPy scalars of the exact C type (``np.int32`` for ``int``, the array
dtype for ``T``): CuPy would pass a Python ``int`` as 8 bytes to a 4-byte ``int`` parameter.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..backend import cupy_module

KERNELS: dict[str, tuple[str, ...]] = {
    "activation": ("relu_forward", "relu_backward"),
    "batchnorm": ("bn_batch_stats", "bn_global_stats", "bn_normalize", "bn_backward"),
    "copy": ("concat_copy",),
    "eltwise": ("weighted_sum", "eltwise_prod", "eltwise_prod_grad", "eltwise_max", "eltwise_max_backward"),
    "im2col": ("im2col", "col2im"),
    "loss": ("euclidean_backward",),
    "reduce": ("channel_partial_sums", "sum_rows"),
    "scale_bias": ("scale_bias",),
    "sgd": ("sgd_update",),
}
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# Multiplies and adds rounded separately, as NumPy computes them (no fused multiply-add).
COMPILE_OPTIONS = ("--fmad=false",)
COMMON_HEADER = "common.cuh"

BLOCK = 256  # BLOCK_THREADS in common.cuh
MAX_GRID = 65536  # with grid-stride loops; keeps int indices of the kernels from overflowing
MAX_COUNT = 2**31 - BLOCK * MAX_GRID
# A null device pointer passed by value (8 zero bytes); spelled so on every CuPy version.
NULL = np.uintp(0)


def kernel_dir() -> Path:
    """The folder holding the .cu files: ``memnet_engine/kernels`` when installed, else ``<checkout>/kernels``."""
    package = Path(__file__).resolve().parents[2]
    for folder in (package / "kernels", package.parent / "kernels"):
        if (folder / COMMON_HEADER).is_file():
            return folder
    raise FileNotFoundError(f"CUDA kernel sources not found in {package / 'kernels'} or {package.parent / 'kernels'}")


def kernel_source(family: str) -> str:
    """The CUDA source of a family with ``common.cuh`` pasted in, as compiled by NVRTC."""
    if family not in KERNELS:
        raise KeyError(f"unknown kernel family {family!r} (known: {', '.join(sorted(KERNELS))})")
    folder = kernel_dir()
    header = (folder / COMMON_HEADER).read_text(encoding="utf-8")
    source = (folder / f"{family}.cu").read_text(encoding="utf-8")
    return source.replace(f'#include "{COMMON_HEADER}"', header, 1)


def name_expression(name: str, dtype) -> str:
    try:
        return f"{name}<{C_TYPES[np.dtype(dtype)]}>"
    except KeyError:
        raise TypeError(f"GPU kernels support float32 and float64, not {np.dtype(dtype)}") from None


def name_expressions(family: str) -> list[str]:
    """Every template instantiation the loader asks for in ``family``."""
    return [name_expression(name, dtype) for name in KERNELS[family] for dtype in C_TYPES]


@lru_cache(maxsize=None)
def _module(family: str, device_id: int, cupy):
    return cupy.RawModule(code=kernel_source(family), options=COMPILE_OPTIONS,
                          name_expressions=name_expressions(family))


def get_kernel(family: str, name: str, dtype):
    """The compiled ``name<T>`` of ``family`` for ``dtype`` on the current device."""
    if name not in KERNELS.get(family, ()):
        raise KeyError(f"kernel {name!r} is not listed for family {family!r} in KERNELS")
    cupy = cupy_module()
    return _module(family, cupy.cuda.Device().id, cupy).get_function(name_expression(name, dtype))


def count_arg(count: int) -> np.int32:
    """An element count as the kernels' ``int``, refusing sizes their int indexing cannot reach."""
    if not 0 <= count < MAX_COUNT:
        raise ValueError(f"array of {count} elements is too large for the GPU kernels (limit {MAX_COUNT - 1})")
    return np.int32(count)


def ints(*values: int) -> tuple[np.int32, ...]:
    return tuple(count_arg(int(v)) for v in values)


def launch(family: str, name: str, dtype, count: int, *args) -> None:
    """1-D grid-stride launch of ``name<T>(count, *args)`` (nothing to do when count is 0)."""
    if count == 0:
        return
    grid = min(-(-count // BLOCK), MAX_GRID)
    get_kernel(family, name, dtype)((grid,), (BLOCK,), (count_arg(count),) + args)


def launch_blocks(family: str, name: str, dtype, grid: tuple[int, ...], *args) -> None:
    """Launch ``name<T>(*args)`` on an explicit grid of BLOCK-thread blocks."""
    if len(grid) > 1 and max(grid[1:]) > 65535:
        raise ValueError(f"grid {grid} exceeds CUDA's 65535 limit on its y/z size")
    get_kernel(family, name, dtype)(tuple(int(g) for g in grid), (BLOCK,), args)


def contiguous(array):
    """``array`` as a C-contiguous device array (the kernels index raw memory)."""
    return cupy_module().ascontiguousarray(array)


def view(array, shape):
    """A reshaped *view* of ``array`` for in-place updates (refuses arrays whose reshape would copy)."""
    if not array.flags.c_contiguous:
        raise ValueError(f"array of shape {array.shape} must be C-contiguous to be updated in place")
    return array.reshape(shape)


def empty_like(array):
    return cupy_module().empty(array.shape, array.dtype)


def scalar(value: float, dtype):
    """``value`` as a NumPy scalar of ``dtype``: a kernel's ``T`` parameter."""
    return np.dtype(dtype).type(value)
