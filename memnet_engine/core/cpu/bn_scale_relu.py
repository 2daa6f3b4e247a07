"""CPU kernels of the fused BatchNorm -> Scale -> ReLU unit (layers/bn_scale_relu.py), compiled by numba.

Arrays are (outer, channels, inner) views of the blobs (a zero-copy Concat's channel slice is one too);
per-channel vectors are flat.  Each pass reads and writes every element once, with the same float32
roundings as Caffe's three layers (z = (x - mean) / std, u = z * gamma + beta,
h = u > 0 ? u : u * negative_slope); per-channel sums accumulate in float64 over contiguous scratch rows,
vectorised (so the order does not depend on the blobs' layout).  The channels are shared among the BLAS
worker threads (core/blas.py; the kernels release the GIL).
"""
from __future__ import annotations

import numpy as np

from .. import blas
from . import c_typed, dot64, kernel, sum64

_KEEP, _DU, _DZ = 0, 1, 2  # what the top diff holds after ``_relu_backward_sums``: itself, du or dz = du * gamma


def _rows(a: np.ndarray, dims: tuple[int, int, int]) -> np.ndarray:
    """``a`` as (outer, channels, inner), C-typed (see ``c_typed``; the blobs' rows are contiguous)."""
    return c_typed(a.reshape(dims))


def _beta(gamma: np.ndarray, beta: "np.ndarray | None") -> np.ndarray:
    """Scale's bias, zeros when it has none (+ 0 changes nothing that the ReLU keeps)."""
    return np.zeros_like(gamma) if beta is None else beta


def _per_channel(kernel, channels: int, *args) -> None:
    """``kernel(channel_indices, *args)`` with the channels shared among the workers."""
    blas.parallel(lambda worker, mine: kernel(np.asarray(mine, np.int64), *args), range(channels))


def batch_moments(x: np.ndarray, dims: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased) variance of x over its outer and inner axes, in x's dtype."""
    mean, var = np.empty(dims[1], x.dtype), np.empty(dims[1], x.dtype)
    _per_channel(_moments, dims[1], _rows(x, dims), mean, var)
    return mean, var


def forward(x, dims, mean, std, gamma, beta, negative_slope: float, out: "np.ndarray | None" = None) -> np.ndarray:
    """h = relu((x - mean) / std * gamma + beta) into ``out`` (may be x) or a new array, returned."""
    out = np.empty_like(x) if out is None else out
    beta = _beta(gamma, beta)
    _per_channel(_forward, dims[1], _rows(x, dims), mean, std, gamma, beta, x.dtype.type(negative_slope),
                 _rows(out, dims))
    return out


def forward_rows(x: np.ndarray, prologue: tuple, out: np.ndarray) -> np.ndarray:
    """``forward`` of one (channels, positions) block into ``out``, on the calling thread (a worker's chunk
    of a convolution that applies the unit as it reads its input); ``prologue`` = (mean, std, gamma, beta or
    None, negative_slope).  The same kernel and roundings as ``forward``."""
    mean, std, gamma, beta, slope = prologue
    beta = _beta(gamma, beta)
    _forward(np.arange(x.shape[0]), x[None], mean, std, gamma, beta, x.dtype.type(slope), out[None])
    return out


def backward(x, h, d, dims, mean, std, gamma, negative_slope: float, *, batch_stats: bool, gamma_diff, beta_diff,
             want_dx: bool, top_gets_dz: bool, beta=None, keep_top: bool = False) -> "np.ndarray | None":
    """Gradients of the unit: Scale's (added to ``gamma_diff`` / ``beta_diff`` where not None) and, with
    ``want_dx``, the input's (returned).  ``d`` (the top diff) is overwritten with the ReLU's input gradient,
    or with BatchNorm's top gradient dz = that * gamma when ``top_gets_dz`` (what Caffe's in-place blob holds),
    unless ``keep_top`` (nothing reads it after: no write pass).
    ``h`` None: the ReLU's mask comes from x (u = z * gamma + beta > 0, the same test as h > 0)."""
    channels, dtype, shape = dims[1], x.dtype, x.shape
    from_input = h is None
    x, d = _rows(x, dims), _rows(d, dims)
    h = x if from_input else _rows(h, dims)
    beta = _beta(gamma, beta)
    slope = dtype.type(negative_slope)
    top_holds = _KEEP if keep_top else _DZ if top_gets_dz else _DU
    sums = np.zeros((2, channels))  # per channel: sum of du, sum of du * z
    dx = np.empty(shape, dtype) if want_dx else None
    _per_channel(_backward, channels, x, h, d, mean, std, gamma, beta, slope, from_input, top_holds, batch_stats,
                 dtype.type(-1.0 / (dims[0] * dims[2])), sums, None if dx is None else dx.reshape(dims))
    for diff, total in ((beta_diff, sums[0]), (gamma_diff, sums[1])):
        if diff is not None:
            flat = diff.reshape(-1)
            flat += total.astype(dtype)
    return dx


@kernel()
def _moments(channels, x, mean, var):  # pragma: no cover (compiled)
    outer, _, inner = x.shape
    row = np.empty(inner, x.dtype)
    for c in channels:
        total = 0.0
        for n in range(outer):
            row[:] = x[n, c]
            total += sum64(row)
        mean[c] = total / (outer * inner)
        mu, total = mean[c], 0.0
        for n in range(outer):
            plane = x[n, c]
            for k in range(inner):
                row[k] = plane[k] - mu
            total += dot64(row, row)
        var[c] = total / (outer * inner)


@kernel()
def _forward(channels, x, mean, std, gamma, beta, slope, out):  # pragma: no cover (compiled)
    outer, _, inner = x.shape
    for c in channels:
        mu, sd, g, b = mean[c], std[c], gamma[c], beta[c]
        for n in range(outer):
            src, dst = x[n, c], out[n, c]
            for k in range(inner):
                u = (src[k] - mu) / sd * g + b
                dst[k] = u if u > 0 else u * slope


@kernel()
def _backward(channels, x, h, d, mean, std, gamma, beta, slope, from_input, top_holds, batch_stats, minus_inv_count,
              sums, dx):  # pragma: no cover (compiled)
    """Per channel, while its rows are in cache: du = d * relu'(h) (h > 0, or with ``from_input``
    z * gamma + beta > 0); sums[0, c] = sum of du, sums[1, c] = sum of du * z; d becomes du or dz = du * gamma as
    ``top_holds`` says (_DU, _DZ), or stays; then unless dx is None, dx = (dz - (z * sum(dz z) + sum(dz)) / count)
    / std with batch statistics (BatchNorm's sums of dz and dz * z: gamma times those of du, rounded like its
    own), else dz / std."""
    outer, _, inner = x.shape
    z, du = np.empty((outer, inner), x.dtype), np.empty((outer, inner), x.dtype)
    for c in channels:
        mu, sd, g, b, total, total_z = mean[c], std[c], gamma[c], beta[c], 0.0, 0.0
        for n in range(outer):
            src, out, grad, zn, dun = x[n, c], h[n, c], d[n, c], z[n], du[n]
            for k in range(inner):
                zn[k] = (src[k] - mu) / sd
                positive = zn[k] * g + b > 0 if from_input else out[k] > 0
                dun[k] = grad[k] * (1 if positive else slope)
            if top_holds == _DU:
                grad[:] = dun
            elif top_holds == _DZ:
                for k in range(inner):
                    grad[k] = dun[k] * g
            total += sum64(dun)
            total_z += dot64(dun, zn)
        sums[0, c] = total
        sums[1, c] = total_z
        if dx is None:
            continue
        mean_dz_z = g * x.dtype.type(total_z) if batch_stats else x.dtype.type(0)
        mean_dz = g * x.dtype.type(total) if batch_stats else x.dtype.type(0)
        for n in range(outer):
            zn, dun, result = z[n], du[n], dx[n, c]
            if batch_stats:
                for k in range(inner):
                    result[k] = ((zn[k] * mean_dz_z + mean_dz) * minus_inv_count + dun[k] * g) / sd
            else:
                for k in range(inner):
                    result[k] = dun[k] * g / sd
