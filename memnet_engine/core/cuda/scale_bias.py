"""Per-channel scale and shift (kernels/scale_bias.cu) of arrays viewed as (outer, channels, inner)."""
from __future__ import annotations

from .loader import NULL, contiguous, empty_like, ints, launch


def scale_bias(x, dims: tuple[int, int, int], scale=None, bias=None, out=None):
    """``x * scale[c] + bias[c]`` (either may be None); into ``out`` (may be x) or a new array."""
    x = contiguous(x)
    out = empty_like(x) if out is None else out
    launch("scale_bias", "scale_bias", x.dtype, x.size, x, NULL if scale is None else contiguous(scale),
           NULL if bias is None else contiguous(bias), *ints(dims[1], dims[2]), out)
    return out
