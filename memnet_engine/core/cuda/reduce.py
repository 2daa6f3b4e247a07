"""Per-channel sums (kernels/reduce.cu) of arrays viewed as (outer, channels, inner), in one launch.

Each block sums a chunk of one channel; the channel's last block adds the partials in a fixed order
(no floating-point atomics: deterministic).  ``arrivals()`` are the per-channel ticket counters
that elect that block.
"""
from __future__ import annotations

from ..backend import cupy_module
from .loader import BLOCK, NULL, contiguous, count_arg, ints, launch_blocks, scalar

TARGET_BLOCKS = 1024  # enough blocks to fill a large GPU
MAX_CHUNKS = 1024

_ARRIVALS: dict = {}  # (device id, cupy module) -> int32 ticket counters, zero between launches


def chunks_for(channels: int, length: int) -> int:
    """Chunks per channel: about TARGET_BLOCKS blocks in all, at least a block's worth of work each."""
    return max(1, min(-(-TARGET_BLOCKS // channels), -(-length // BLOCK), MAX_CHUNKS))


def arrivals(channels: int):
    """Ticket counters for ``channels`` channels (all zero between launches) for single-launch reductions;
    one array per device, grown to the next power of two when a launch needs more."""
    cp = cupy_module()
    key = (cp.cuda.runtime.getDevice(), cp)
    counters = _ARRIVALS.get(key)
    if counters is None or counters.size < channels:
        counters = _ARRIVALS[key] = cp.zeros(max(64, 1 << (channels - 1).bit_length()), "int32")
    return counters


def _output(out, channels: int, name: str):
    if out is None:
        return NULL
    if out.size != channels or not out.flags.c_contiguous:
        raise ValueError(f"channel_sums: {name} must be C-contiguous with {channels} elements (shape {out.shape})")
    return out


def channel_sums(a, dims: tuple[int, int, int], *, times=None, shift=None, sums=None, dots=None,
                 alpha: float = 1.0, beta_sums: float = 0.0, beta_dots: float = 0.0):
    """Per channel c, with u = a - shift[c] (no shift: u = a) and w = times (None: w = u):
    ``sums[c] = alpha * sum(u) + beta_sums * sums[c]`` and ``dots[c] = alpha * sum(u * w) + beta_dots *
    dots[c]``, in place (an output is not read when its beta is 0; None: not computed).  One launch.
    Returns (sums, dots)."""
    outer, channels, inner = dims
    count_arg(outer * channels * inner)
    chunks = chunks_for(channels, outer * inner)
    cp, dt = cupy_module(), a.dtype
    part_sum = cp.empty((channels, chunks), dt) if sums is not None else None
    part_dot = cp.empty((channels, chunks), dt) if dots is not None else None

    def ptr(array):
        return NULL if array is None else contiguous(array)

    launch_blocks("reduce", "channel_sums", dt, (chunks, channels), contiguous(a), ptr(times), ptr(shift),
                  *ints(outer, channels, inner), ptr(part_sum), ptr(part_dot), arrivals(channels), scalar(alpha, dt),
                  scalar(beta_sums, dt), scalar(beta_dots, dt), _output(sums, channels, "sums"),
                  _output(dots, channels, "dots"))
    return sums, dots
