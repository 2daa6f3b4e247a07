"""BatchNorm kernels (kernels/batchnorm.cu) on arrays viewed as (outer, channels, inner)."""
from __future__ import annotations

from ..backend import cupy_module
from .loader import NULL, contiguous, empty_like, ints, launch, scalar
from .reduce import channel_sums


def batch_stats(x, dims: tuple[int, int, int], eps: float, fraction: float, running: list):
    """(mean, std) of the batch per channel; updates the running sums ``running`` in place.

    ``running`` = [sum of means, sum of variances, scale] (BatchNorm's blobs).  Caffe's update:
    mean sum = mean + fraction * mean sum; variance sum = m / (m - 1) * variance + fraction *
    variance sum; scale = fraction * scale + 1; m = outer * inner values per channel.
    """
    outer, channels, inner = dims
    m = outer * inner
    cp = cupy_module()
    mean, var, std = (cp.empty((channels,), x.dtype) for _ in range(3))
    channel_sums(x, dims, sums=mean, alpha=1.0 / m)
    channel_sums(x, dims, shift=mean, dots=var, alpha=1.0 / m)
    dt = x.dtype
    correction = m / (m - 1) if m > 1 else 1.0
    launch("batchnorm", "bn_batch_stats", dt, channels, mean, var, scalar(eps, dt), scalar(fraction, dt),
           scalar(correction, dt), *running, std)
    return mean, std


def global_stats(running: list, eps: float):
    """(mean, std) per channel from the running sums (mean, variance, scale)."""
    sum_mean, sum_var, scale = running
    mean, std = empty_like(sum_mean), empty_like(sum_mean)
    dt = sum_mean.dtype
    launch("batchnorm", "bn_global_stats", dt, sum_mean.size, sum_mean, sum_var, scale, scalar(eps, dt), mean, std)
    return mean, std


def normalize(x, dims: tuple[int, int, int], mean, std):
    """``(x - mean[c]) / std[c]`` as a new array."""
    x = contiguous(x)
    y = empty_like(x)
    launch("batchnorm", "bn_normalize", x.dtype, x.size, x, mean, std, *ints(dims[1], dims[2]), y)
    return y


def backward(dy, dims: tuple[int, int, int], std, y=None):
    """Bottom gradient: batch statistics when ``y`` (the normalised output) is given, else stored ones."""
    dy = contiguous(dy)
    dx = empty_like(dy)
    dt = dy.dtype
    if y is None:
        sum_dy = sum_dy_y = NULL
        y_arg, neg_inv_m = NULL, scalar(0, dt)
    else:
        sum_dy, sum_dy_y = (cupy_module().empty((dims[1],), dt) for _ in range(2))
        channel_sums(dy, dims, times=y, sums=sum_dy, dots=sum_dy_y)
        y_arg, neg_inv_m = contiguous(y), scalar(-1.0 / (dims[0] * dims[2]), dt)
    launch("batchnorm", "bn_backward", dt, dy.size, dy, y_arg, sum_dy, sum_dy_y, std, neg_inv_m,
           *ints(dims[1], dims[2]), dx)
    return dx
