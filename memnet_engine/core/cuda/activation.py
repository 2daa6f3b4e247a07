"""ReLU kernels (kernels/activation.cu)."""
from __future__ import annotations

from .loader import contiguous, empty_like, launch, scalar


def relu_forward(x, negative_slope: float, out=None):
    """``x > 0 ? x : x * negative_slope`` into ``out`` (may be a contiguous x) or a new array."""
    x = contiguous(x)
    y = empty_like(x) if out is None else out
    launch("activation", "relu_forward", x.dtype, x.size, x, scalar(negative_slope, x.dtype), y)
    return y


def relu_backward(x, dy, negative_slope: float):
    """Bottom gradient of ReLU; ``x`` is the input or (in place) the output."""
    x, dy = contiguous(x), contiguous(dy)
    dx = empty_like(dy)
    launch("activation", "relu_backward", x.dtype, x.size, x, dy, scalar(negative_slope, x.dtype), dx)
    return dx
