"""Fused BatchNorm -> Scale -> ReLU kernels (kernels/bn_scale_relu.cu) on arrays viewed as (outer, channels, inner)."""
from __future__ import annotations

import numpy as np

from ..backend import cupy_module
from .loader import NULL, contiguous, count_arg, empty_like, ints, launch, launch_blocks, scalar, view
from .reduce import arrivals, chunks_for


def batch_stats(x, dims: tuple[int, int, int], eps: float, fraction: float, running: list):
    """(mean, std) of the batch per channel, updating BatchNorm's running sums ``running`` in place
    (Caffe's rule, see bsr_stats).  One launch."""
    outer, channels, inner = dims
    count_arg(outer * channels * inner)
    chunks = chunks_for(channels, outer * inner)
    cp = cupy_module()
    dt = x.dtype
    parts = [cp.empty((channels, chunks), dt) for _ in range(3)]
    mean, std = cp.empty((channels,), dt), cp.empty((channels,), dt)
    m = outer * inner
    launch_blocks("bn_scale_relu", "bsr_stats", dt, (chunks, channels), contiguous(x), *ints(outer, channels, inner),
                  *parts, arrivals(channels), scalar(eps, dt), scalar(fraction, dt), scalar(m / (m - 1) if m > 1 else 1.0, dt),
                  *running, mean, std)
    return mean, std


def forward(x, dims: tuple[int, int, int], mean, std, gamma, beta, slope: float, out=None):
    """The unit's output relu((x - mean) / std * gamma + beta) into ``out`` (may be x) or a new array."""
    x = contiguous(x)
    h = empty_like(x) if out is None else out
    launch("bn_scale_relu", "bsr_forward", x.dtype, x.size, x, mean, std, contiguous(gamma),
           NULL if beta is None else contiguous(beta), scalar(slope, x.dtype), *ints(dims[1], dims[2]), h)
    return h


def backward(x, h, dh, dims: tuple[int, int, int], mean, std, gamma, slope: float, *, batch_stats: bool,
             gamma_diff=None, beta_diff=None, want_dx: bool, top_gets_dz: bool):
    """The unit's input gradient (None unless ``want_dx``); accumulates Scale's parameter gradients into
    ``gamma_diff`` / ``beta_diff`` (None: not wanted) and overwrites ``dh`` (contiguous) with dz (or du).

    One reduction (one launch) when batch statistics or a parameter gradient need it, then one apply pass.
    """
    outer, channels, inner = dims
    dt = x.dtype
    x, h = contiguous(x), contiguous(h)
    sum_dz = sum_dz_z = NULL
    if (batch_stats and want_dx) or gamma_diff is not None or beta_diff is not None:
        chunks = chunks_for(channels, outer * inner)
        cp = cupy_module()
        part_du, part_du_z = cp.empty((channels, chunks), dt), cp.empty((channels, chunks), dt)
        sums = cp.empty((2, channels), dt)
        launch_blocks("bn_scale_relu", "bsr_grad_sums", dt, (chunks, channels), x, h, dh, mean, std,
                      scalar(slope, dt), *ints(outer, channels, inner), part_du, part_du_z, arrivals(channels),
                      contiguous(gamma), NULL if gamma_diff is None else view(gamma_diff, -1),
                      NULL if beta_diff is None else view(beta_diff, -1), sums[0], sums[1])
        if batch_stats:
            sum_dz, sum_dz_z = sums[0], sums[1]
    dx = empty_like(x) if want_dx else None
    launch("bn_scale_relu", "bsr_backward", dt, x.size, x, h, dh, mean, std, contiguous(gamma), sum_dz, sum_dz_z,
           scalar(-1.0 / (outer * inner), dt), scalar(slope, dt), np.int32(top_gets_dz), *ints(channels, inner),
           NULL if dx is None else dx)
    return dx
