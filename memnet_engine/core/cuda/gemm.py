"""Matrix products through cuBLAS (``cupy.cublas.gemm``): no copies for C-contiguous operands."""
from __future__ import annotations

from .. import profiler
from ..backend import cupy_module


def gemm(a, b, out, *, trans_a: bool = False, trans_b: bool = False, beta: float = 0.0) -> None:
    """``out = op(a) @ op(b) + beta * out`` in place, op = transpose where asked.

    All three are 2-D C-contiguous device arrays of one dtype; ``out`` is not read when beta is 0.
    """
    for name, m in (("a", a), ("b", b), ("out", out)):
        if m.ndim != 2 or not m.flags.c_contiguous:
            raise ValueError(f"gemm: {name} must be a 2-D C-contiguous array (shape {m.shape})")
    cupy_module()
    from cupy import cublas

    cublas.gemm("T" if trans_a else "N", "T" if trans_b else "N", a, b, out=out, alpha=1.0, beta=beta)
    if profiler.active is not None:
        profiler.active.record_gemm()
