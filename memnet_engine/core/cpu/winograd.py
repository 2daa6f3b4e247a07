"""3x3 convolution (stride 1, dilation 1, padding up to 2) on the CPU by Winograd's F(2x2, 3x3) algorithm.

Each 2x2 block of outputs ("tile") of a channel is A^T [sum_c U[k, c] * V[c]] A, elementwise in the
4x4 transformed domain: V = B^T d B is the 4x4 input patch d transformed, U = G g G^T the 3x3 kernel
g transformed (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).  The sum over
channels is 16 GEMMs (one per transformed position xi): M[xi] (K, tiles) = U[xi] (K, C) @ V[xi] (C, tiles),
2.25x fewer multiplications than im2col's GEMM.  Rounding: every transform is exact additions and halvings
of float32 values (U is computed in float64), so outputs differ from the direct sum by about as much as
two direct summation orders differ (measured: max |error| 1.9e-6 vs 2.1e-6 for direct float32 at 144x144,
C=K=64, against float64).

Work is cut into chunks of tile rows of one image, sized so that one chunk's V and M (16 * channels *
tiles) stay in the core's cache; the chunks are shared among the BLAS workers (core/blas.py), each running
one compiled loop (numba, GIL released) over its chunks: input transform -> 16 GEMMs (NumPy's OpenBLAS,
called directly: core/cpu ``matmul``) -> output transform.  Scratch comes from the caller's Workspace, one
slot set per worker.

Backward: the input gradient is the same algorithm on the top diff with the kernels turned by 180 degrees
and transposed (padding 2 - pad); the weight gradient is dU[xi] = sum over tiles (A dy A^T)[xi] V[xi]^T
(computed transposed, with the top diff's transform laid out tile-major), then G^T dU G (in float64).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import blas
from . import c_typed, kernel, matmul

if TYPE_CHECKING:
    from ..workspace import Workspace

# Bytes of one chunk's transformed input V (its M is as large for equal channel counts).
CHUNK_BYTES = 1 << 20
# Columns (tiles) per GEMM of ``convolve``: OpenBLAS runs (64, 64) x (64, n) products about 20 % faster for
# n < 256 than for n >= 256 (measured on AVX-512: 112 vs 91 GFLOP/s per core).
GEMM_COLUMNS = 128

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # F(2x2, 3x3) kernel transform
_GG = np.kron(_G, _G)  # (16, 9): vec(G g G^T) = (G kron G) vec(g), row-major vectors
_GG_T = np.ascontiguousarray(_GG.T)


def applies(kernel: tuple[int, int], pad: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            group: int, channels: int, num_output: int) -> bool:
    """True for the convolutions this module runs: 3x3, padding up to 2 (the input gradient's is 2 - pad),
    stride 1, dilation 1, one group, and enough channels on both sides (>= 8) for the 16 GEMMs to beat
    im2col's one."""
    return (kernel == (3, 3) and max(pad) <= 2 and stride == (1, 1) and dilation == (1, 1) and group == 1
            and min(channels, num_output) >= 8)


def kernel_transform(weights: np.ndarray, *, turned: bool = False) -> np.ndarray:
    """U (16, K, C) = G g G^T of weights (K, C, 3, 3), computed in float64, in the weights' dtype.

    ``turned``: of the kernels turned by 180 degrees with input and output swapped, (16, C, K): the
    convolution whose output is the input gradient."""
    g = weights[:, :, ::-1, ::-1].transpose(1, 0, 2, 3) if turned else weights
    u = np.ascontiguousarray(g, dtype=np.float64).reshape(-1, 9) @ _GG_T  # (K * C, 16), one row per kernel
    return np.ascontiguousarray(u.T, dtype=weights.dtype).reshape(16, *g.shape[:2])


def _grid(out_hw: tuple[int, int], channels: int, itemsize: int) -> tuple[int, list[tuple[int, int]]]:
    """Tiles per row and the chunks' tile-row ranges [r0, r1) of one image (about CHUNK_BYTES of V each)."""
    tile_rows, tiles_per_row = -(-out_hw[0] // 2), -(-out_hw[1] // 2)
    most = max(1, CHUNK_BYTES // (16 * channels * itemsize * tiles_per_row))
    rows = -(-tile_rows // -(-tile_rows // most))  # chunks of equal size
    return tiles_per_row, [(r, min(r + rows, tile_rows)) for r in range(0, tile_rows, rows)]


def _prologue_arguments(prologue: "tuple | None", channels: int, dtype) -> tuple:
    """``_input_tiles``'s last arguments: (apply, mean, std, gamma, beta, slope), vectors of ``dtype``."""
    if prologue is None:
        ones = np.ones(channels, dtype)
        return (False, ones, ones, ones, ones, dtype.type(0))
    mean, std, gamma, beta, slope = prologue
    beta = np.zeros(channels, dtype) if beta is None else beta  # + 0 changes nothing that the ReLU keeps
    vectors = (np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in (mean, std, gamma, beta))
    return (True, *vectors, dtype.type(slope))


def _chunks(x, out_hw: tuple[int, int], outputs: int, prologue, scratch: "Workspace"):
    """(x as the kernels read it, tiles per row, the chunks (n, r0, r1) of all images as an int64 array,
    ``buffers(worker)``: the worker's flat V and M scratch for the largest chunk (either way round), the
    prologue's arguments)."""
    num, channels = x.shape[:2]
    wider = max(channels, outputs)
    tiles_per_row, row_ranges = _grid(out_hw, wider, x.dtype.itemsize)
    size = 16 * wider * max(r1 - r0 for r0, r1 in row_ranges) * tiles_per_row
    chunks = np.array([(n, r0, r1) for n in range(num) for r0, r1 in row_ranges], np.int64).reshape(-1, 3)

    def buffers(worker: int) -> tuple[np.ndarray, np.ndarray]:
        return _slot(scratch, "v", worker, (size,), x.dtype), _slot(scratch, "m", worker, (size,), x.dtype)

    return c_typed(x), tiles_per_row, chunks, buffers, _prologue_arguments(prologue, channels, x.dtype)


def _slot(scratch: "Workspace", name: str, worker: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    return scratch.array(f"winograd_{name}{worker}", shape, dtype)


def convolve(x: np.ndarray, u: np.ndarray, pad: tuple[int, int], out: np.ndarray, bias: "np.ndarray | None",
             scratch: "Workspace", prologue: "tuple | None" = None) -> None:
    """out (N, K, Ho, Wo) = x (N, C, H, W) convolved (3x3, stride 1, ``pad``) with the kernels whose transform
    is ``u`` (16, K, C), plus ``bias`` (K,) when given; Ho = H + 2 pad - 2.

    ``prologue`` = (mean, std, gamma, beta, negative_slope), per-channel vectors but the slope: x is first
    replaced by relu((x - mean) / std * gamma + beta), with the fused BatchNorm unit's roundings, as each
    input row is loaded (the padding stays 0)."""
    outputs = u.shape[1]
    x, tiles_per_row, chunks, buffers, unit = _chunks(x, out.shape[2:], outputs, prologue, scratch)
    bias = np.zeros(outputs, x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype).reshape(-1)
    gemm = blas.gemm(x.dtype)
    blas.parallel(lambda worker, mine: _convolve_chunks(gemm, x, mine, *pad, tiles_per_row, u, *buffers(worker), bias,
                                                        out, *unit), chunks)


def input_gradient(dy: np.ndarray, turned: np.ndarray, pad: tuple[int, int], dx: np.ndarray,
                   scratch: "Workspace") -> None:
    """dx = the input gradient of the convolution with padding ``pad`` whose top diff is ``dy``: dy convolved
    (padding 2 - pad) with the kernels turned by 180 degrees and transposed (``turned``:
    ``kernel_transform(..., turned=True)``)."""
    convolve(dy, turned, (2 - pad[0], 2 - pad[1]), dx, None, scratch)


def weight_gradient(x: np.ndarray, dy: np.ndarray, pad: tuple[int, int], scratch: "Workspace",
                    prologue: "tuple | None" = None, turned: "np.ndarray | None" = None,
                    dx: "np.ndarray | None" = None) -> np.ndarray:
    """sum over images and positions of dy's outer products with x's 3x3 windows: the weight gradient
    (K, C, 3, 3) in float64, of the convolution ``convolve(x, ..., pad, prologue=prologue)`` whose top diff
    is ``dy``.  With ``dx``, also ``input_gradient(dy, turned, pad, dx)``, in the same pass over the chunks
    where the two share their tiles (pad 1: each chunk's top diff is read once, while it is in cache)."""
    channels, outputs = x.shape[1], dy.shape[1]
    together = dx is not None and dx.shape[2:] == dy.shape[2:]
    if dx is not None and not together:
        input_gradient(dy, turned, pad, dx, scratch)
    x, tiles_per_row, chunks, buffers, unit = _chunks(x, dy.shape[2:], outputs, prologue, scratch)
    gemm, dy = blas.gemm(x.dtype), c_typed(dy)
    sums = [_slot(scratch, "du", k, (16, channels, outputs), x.dtype) for k in range(blas.workers())]
    if together:
        plain, no_bias = _prologue_arguments(None, outputs, x.dtype), np.zeros(channels, x.dtype)
        work = lambda worker, mine: _gradients_chunks(gemm, x, dy, mine, tiles_per_row, turned, *buffers(worker),
                                                      sums[worker], dx, no_bias, unit, plain)
    else:
        work = lambda worker, mine: _gradient_chunks(gemm, x, dy, mine, *pad, tiles_per_row, *buffers(worker),
                                                     sums[worker], *unit)
    used = blas.parallel(work, chunks)
    du = sum(total.astype(np.float64) for total in sums[:used]).transpose(0, 2, 1)  # (16, K, C)
    return (du.reshape(16, -1).T @ _GG).reshape(outputs, channels, 3, 3)  # G^T dU G per kernel


@kernel()
def _convolve_chunks(gemm, x, chunks, pad_h, pad_w, tiles_per_row, u, v_buffer, m_buffer, bias, y, activate, mean,
                     std, gamma, beta, slope):  # pragma: no cover (compiled)
    """``convolve`` of a worker's chunks."""
    for i in range(chunks.shape[0]):
        _convolve_chunk(gemm, x, chunks[i], pad_h, pad_w, tiles_per_row, u, v_buffer, m_buffer, bias, y, activate,
                        mean, std, gamma, beta, slope)


@kernel()
def _gradient_chunks(gemm, x, dy, chunks, pad_h, pad_w, tiles_per_row, v_buffer, m_buffer, total, activate, mean,
                     std, gamma, beta, slope):  # pragma: no cover (compiled)
    """``weight_gradient``'s sum over a worker's chunks (see ``_gradient_chunk``)."""
    for i in range(chunks.shape[0]):
        _gradient_chunk(gemm, x, dy, chunks[i], i == 0, pad_h, pad_w, tiles_per_row, v_buffer, m_buffer, total,
                        activate, mean, std, gamma, beta, slope)


@kernel()
def _gradients_chunks(gemm, x, dy, chunks, tiles_per_row, turned, v_buffer, m_buffer, total, dx, no_bias, unit,
                      plain):  # pragma: no cover (compiled)
    """``weight_gradient`` with the input gradient, pad 1, of a worker's chunks: each chunk's weight-gradient
    sum, then its rows of dx (same tiles)."""
    for i in range(chunks.shape[0]):
        _gradient_chunk(gemm, x, dy, chunks[i], i == 0, 1, 1, tiles_per_row, v_buffer, m_buffer, total, *unit)
        _convolve_chunk(gemm, dy, chunks[i], 1, 1, tiles_per_row, turned, v_buffer, m_buffer, no_bias, dx, *plain)


@kernel()
def _convolve_chunk(gemm, x, chunk, pad_h, pad_w, tiles_per_row, u, v_buffer, m_buffer, bias, y, activate, mean,
                    std, gamma, beta, slope):  # pragma: no cover (compiled)
    """One chunk (n, r0, r1) of ``convolve``: input transform -> 16 GEMMs (``matmul``) -> output transform."""
    outputs, channels = u.shape[1:]
    v, tiles = _transformed_chunk(x, chunk, channels, pad_h, pad_w, tiles_per_row, v_buffer, activate, mean, std,
                                  gamma, beta, slope)
    m = m_buffer[:16 * outputs * tiles].reshape(16, outputs, tiles)
    for xi in range(16):
        for first in range(0, tiles, GEMM_COLUMNS):
            last = min(first + GEMM_COLUMNS, tiles)
            matmul(gemm, u[xi], v[xi, :, first:last], m[xi, :, first:last], False)
    _output_tiles(m, chunk[0], chunk[1], chunk[2], tiles_per_row, bias, y)


@kernel()
def _gradient_chunk(gemm, x, dy, chunk, first_chunk, pad_h, pad_w, tiles_per_row, v_buffer, m_buffer, total,
                    activate, mean, std, gamma, beta, slope):  # pragma: no cover (compiled)
    """total[xi] (C, K) (+)= sum over the chunk's tiles of V[xi] (A dy A^T)[xi], the transposed dU[xi]: the
    tile-major (A dy A^T) makes the products' second operand row-major along the tiles (OpenBLAS runs this
    form about 1.5x faster than one with a transposed operand)."""
    channels, outputs = total.shape[1:]
    v, tiles = _transformed_chunk(x, chunk, channels, pad_h, pad_w, tiles_per_row, v_buffer, activate, mean, std,
                                  gamma, beta, slope)
    m = m_buffer[:16 * outputs * tiles].reshape(16, tiles, outputs)
    _gradient_tiles(dy, chunk[0], chunk[1], chunk[2], tiles_per_row, m)
    for xi in range(16):
        for first in range(0, tiles, GEMM_COLUMNS):
            last = min(first + GEMM_COLUMNS, tiles)
            matmul(gemm, v[xi, :, first:last], m[xi, first:last], total[xi], not first_chunk or first > 0)


@kernel()
def _transformed_chunk(x, chunk, channels, pad_h, pad_w, tiles_per_row, v_buffer, activate, mean, std, gamma, beta,
                       slope):  # pragma: no cover (compiled)
    """(V (16, channels, tiles) of chunk (n, r0, r1) in v_buffer, filled by ``_input_tiles``; its tile count)."""
    tiles = (chunk[2] - chunk[1]) * tiles_per_row
    v = v_buffer[:16 * channels * tiles].reshape(16, channels, tiles)
    _input_tiles(x, chunk[0], pad_h, pad_w, chunk[1], chunk[2], tiles_per_row, v, activate, mean, std, gamma, beta,
                 slope)
    return v, tiles


@kernel()
def _input_tiles(x, n, pad_h, pad_w, r0, r1, tiles_per_row, v, activate, mean, std, gamma, beta,
                 slope):  # pragma: no cover (compiled)
    """v[4i + j, c, r * tiles_per_row + q] = (B^T d B)[i, j] for the 4x4 input patch d of tile (r0 + r, q) of
    image n: rows 2 (r0 + r) - pad_h .. + 3, columns 2q - pad_w .. + 3 (zero outside the image).  With
    ``activate``, d is taken from relu((x - mean[c]) / std[c] * gamma[c] + beta[c]) (see ``convolve``'s
    prologue).

    Each input row, zero-padded, goes through B^T along the row for all its tiles at once (stride-2 reads);
    then B down the columns is one unit-stride loop over all the chunk's tiles (both vectorised by LLVM)."""
    channels, (height, width) = v.shape[1], x.shape[2:]
    rows = r1 - r0
    tiles = rows * tiles_per_row
    padded = np.zeros(2 * tiles_per_row + 2, v.dtype)  # padded[pad_w + w] = d(w); the columns tiles read
    columns = np.empty((8, (rows + 1) * tiles_per_row), v.dtype)  # [4a + j, r * tiles_per_row + q]: input row 2r + a
    for c in range(channels):
        mu, sd, g, b = mean[c], std[c], gamma[c], beta[c]
        for i in range(2 * rows + 2):
            h, start = 2 * r0 + i - pad_h, i // 2 * tiles_per_row
            a = 4 * (i % 2)
            c0, c1 = columns[a, start:start + tiles_per_row], columns[a + 1, start:start + tiles_per_row]
            c2, c3 = columns[a + 2, start:start + tiles_per_row], columns[a + 3, start:start + tiles_per_row]
            if h < 0 or h >= height:
                for q in range(tiles_per_row):
                    c0[q] = c1[q] = c2[q] = c3[q] = 0
                continue
            line = x[n, c, h]
            if activate:
                for w in range(width):
                    u = (line[w] - mu) / sd * g + b
                    padded[pad_w + w] = u if u > 0 else u * slope
            else:
                padded[pad_w:pad_w + width] = line
            for q in range(tiles_per_row):
                c0[q] = padded[2 * q] - padded[2 * q + 2]
                c1[q] = padded[2 * q + 1] + padded[2 * q + 2]
                c2[q] = padded[2 * q + 2] - padded[2 * q + 1]
                c3[q] = padded[2 * q + 1] - padded[2 * q + 3]
        for j in range(4):
            top, bottom = columns[j], columns[4 + j]
            top1, bottom1 = columns[j, tiles_per_row:], columns[4 + j, tiles_per_row:]
            v0, v1, v2, v3 = v[j, c], v[4 + j, c], v[8 + j, c], v[12 + j, c]
            for f in range(tiles):
                v0[f] = top[f] - top1[f]
                v1[f] = bottom[f] + top1[f]
                v2[f] = top1[f] - bottom[f]
                v3[f] = bottom[f] - bottom1[f]


@kernel()
def _output_tiles(m, n, r0, r1, tiles_per_row, bias, y):  # pragma: no cover (compiled)
    """Output rows 2 r0 .. 2 r1 - 1 of image n of y (N, K, Ho, Wo): A^T m A of each tile, plus bias[k]
    (m laid out as ``_input_tiles`` lays out v)."""
    channels, out_h, out_w = y.shape[1:]
    tiles, pairs = (r1 - r0) * tiles_per_row, out_w // 2
    s = np.empty((4, tiles), m.dtype)  # A^T down the columns, for output rows of one parity
    pair = np.empty((2, tiles), m.dtype)  # the tile's two outputs in such a row
    for k in range(channels):
        b = bias[k]
        for a in range(2):
            for j in range(4):
                s0, m0, m1, m2, m3 = s[j], m[j, k], m[4 + j, k], m[8 + j, k], m[12 + j, k]
                if a == 0:
                    for f in range(tiles):
                        s0[f] = m0[f] + m1[f] + m2[f]
                else:
                    for f in range(tiles):
                        s0[f] = m1[f] - m2[f] - m3[f]
            left, right = pair[0], pair[1]
            for f in range(tiles):
                left[f] = s[0, f] + s[1, f] + s[2, f] + b
                right[f] = s[1, f] - s[2, f] - s[3, f] + b
            for r in range(r1 - r0):
                h = 2 * (r0 + r) + a
                if h >= out_h:
                    break
                line, first = y[n, k, h], r * tiles_per_row
                for q in range(pairs):
                    line[2 * q] = left[first + q]
                    line[2 * q + 1] = right[first + q]
                if out_w % 2:
                    line[2 * pairs] = left[first + pairs]


@kernel()
def _gradient_tiles(dy, n, r0, r1, tiles_per_row, g):  # pragma: no cover (compiled)
    """g[4i + j, t, k] = (A e A^T)[i, j] for the 2x2 top-diff patch e of channel k in tile t of image n (0 past
    the edge): the gradient of the loss with respect to M[4i + j, k, t], tile-major.  Sixteen channels at a
    time: a patch's values are gathered across channels, then each of its 16 outputs is one vector store."""
    channels, (out_h, out_w) = g.shape[2], dy.shape[2:]
    e = np.zeros((4, 16), g.dtype)  # e[2a + b, kk] = dy(2r + a, 2q + b) of channel k0 + kk
    for r in range(r1 - r0):
        h = 2 * (r0 + r)
        for q in range(tiles_per_row):
            t, w = r * tiles_per_row + q, 2 * q
            for k0 in range(0, channels, 16):
                block = min(16, channels - k0)
                for kk in range(block):
                    k = k0 + kk
                    e[0, kk] = dy[n, k, h, w]
                    e[1, kk] = dy[n, k, h, w + 1] if w + 1 < out_w else 0
                    e[2, kk] = dy[n, k, h + 1, w] if h + 1 < out_h else 0
                    e[3, kk] = dy[n, k, h + 1, w + 1] if h + 1 < out_h and w + 1 < out_w else 0
                e00, e01, e10, e11 = e[0], e[1], e[2], e[3]
                for i in range(4):  # A e down the columns (row i), then A^T across
                    g0, g1 = g[4 * i, t, k0:k0 + block], g[4 * i + 1, t, k0:k0 + block]
                    g2, g3 = g[4 * i + 2, t, k0:k0 + block], g[4 * i + 3, t, k0:k0 + block]
                    for kk in range(block):
                        if i == 0:
                            left, right = e00[kk], e01[kk]
                        elif i == 1:
                            left, right = e00[kk] + e10[kk], e01[kk] + e11[kk]
                        elif i == 2:
                            left, right = e00[kk] - e10[kk], e01[kk] - e11[kk]
                        else:
                            left, right = -e10[kk], -e11[kk]
                        g0[kk] = left
                        g1[kk] = left + right
                        g2[kk] = left - right
                        g3[kk] = -right
