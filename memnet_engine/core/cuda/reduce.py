"""Per-channel sums (kernels/reduce.cu) of arrays viewed as (outer, channels, inner).

Two passes, no atomics, so results are deterministic: ``partial_sums`` leaves one partial per
(channel, chunk), ``finish`` adds them up (optionally scaled, optionally accumulated).
"""
from __future__ import annotations

from ..backend import cupy_module
from .loader import BLOCK, NULL, contiguous, count_arg, ints, launch_blocks, scalar

TARGET_BLOCKS = 1024  # enough blocks to fill a large GPU
MAX_CHUNKS = 1024


def chunks_for(channels: int, length: int) -> int:
    """Chunks per channel: about TARGET_BLOCKS blocks in all, at least a block's worth of work each."""
    return max(1, min(-(-TARGET_BLOCKS // channels), -(-length // BLOCK), MAX_CHUNKS))


def partial_sums(a, dims: tuple[int, int, int], *, times=None, shift=None, sums: bool = True, dots: bool = False):
    """(part_sum, part_dot), each (channels, chunks) or None when not asked for.

    With u = a - shift[c] (no shift: u = a) and w = times (None: w = u), per channel c:
    part_sum adds up to sum(u) and part_dot to sum(u * w).
    """
    outer, channels, inner = dims
    count_arg(outer * channels * inner)
    chunks = chunks_for(channels, outer * inner)
    cp = cupy_module()
    part_sum = cp.empty((channels, chunks), a.dtype) if sums else None
    part_dot = cp.empty((channels, chunks), a.dtype) if dots else None

    def ptr(array):
        return NULL if array is None else contiguous(array)

    launch_blocks("reduce", "channel_partial_sums", a.dtype, (chunks, channels), contiguous(a), ptr(times),
                  ptr(shift), *ints(outer, channels, inner), ptr(part_sum), ptr(part_dot))
    return part_sum, part_dot


def finish(part, out=None, *, alpha: float = 1.0, beta: float = 0.0):
    """``out[c] = alpha * part[c].sum() + beta * out[c]``; ``out`` (C-contiguous) is new when None."""
    channels, chunks = part.shape
    if out is None:
        out = cupy_module().empty((channels,), part.dtype)
    elif out.size != channels or not out.flags.c_contiguous:
        raise ValueError(f"finish: out must be C-contiguous with {channels} elements (shape {out.shape})")
    launch_blocks("reduce", "sum_rows", part.dtype, (channels,), part, count_arg(chunks),
                  scalar(alpha, part.dtype), scalar(beta, part.dtype), out)
    return out
