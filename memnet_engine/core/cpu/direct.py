"""Direct stride-1 convolution on the CPU for convolutions with few channels on one side (MemNet's first,
1 -> 64, and its reconstructions, 64 -> 1): any kernel size, padding and dilation.

There im2col + GEMM is memory-bound: a 1 x 576 by 576 x P product builds a column matrix of 576 rows,
and backward builds it again.  Here, per chunk (one image, a band of R output rows), each input channel's
rows that the band reads are copied, zero-padded, into a plane with row stride Wp = W + 2 pw; output
position (r, w) of the band is then position f = r Wp + w of a "wide" plane, and tap (i, j) reads the
input plane at f + i dh Wp + j dw.  So taps are long unit-stride passes over all the chunk's positions,
acc[k][f] += w[k, c, i, j] * plane[f + i dh Wp + j dw], three taps to a pass (vectorised by LLVM); the
columns w >= Wo of a wide plane read across row ends and are left out when the valid ones are copied to
the output with the bias.  K C kh kw / 3 passes over a chunk: cheap when C or K is small.

Backward: the input gradient is the same convolution of the top diff with the kernels turned by 180
degrees (the caller's, see layers/convolution.py); the weight gradient dw[k, c, i, j] is the sum over
chunks of dot products of the top diff's band laid out wide (zeros in the junk columns) with the input
plane shifted by tap (i, j).

Work is cut into chunks of (image, band of output rows), bands of equal height sized so that the input
plane and the wide planes that are read again for each input channel (all K when C > 1, else one) stay in
the core's L2 (about CHUNK_BYTES), and so that a single image still gives every worker a band; the chunks
are shared among the BLAS workers (core/blas.py), each running compiled kernels (numba, GIL released) on
its own scratch from the caller's Workspace.

Rounding: forward sums the taps in the order (c, i, j) in the dtype, three at a time added together to the
sum, then adds the bias, as Caffe's GEMM then bias do (in another order: float32 outputs differ from
im2col's by a few units in the last place).
The weight gradient's dot products are float32 products summed in float64 (``dot64`` of core/cpu, over
contiguous scratch rows: the order depends on the band's length alone), chunk sums and the workers' partial
sums added in float64 in a fixed order: deterministic.  A NaN or infinity in the input may reach a few more
taps of the weight gradient than through im2col (a junk column's 0 times it).

When it pays (``MOST_CHANNELS``): forward + backward (both gradients) of a 3x3 pad-1 float32 convolution
with 64 channels on the other side, as a fraction of im2col + GEMM's time, batch 8 of 31x31 / one 144x144
image, on a 2-core AMD EPYC (a busy machine: about +-10%):

    channels on the few side     1             2             4             8
    output (64 -> few)           0.40 / 0.31   0.27 / 0.27   0.46 / 0.48   0.75 / 0.77
    input (few -> 64)            0.47 / 0.46   0.51 / 0.54   0.78 / 0.81   1.15 / 1.18

so up to 4 (with 8 or more on both sides, Winograd runs the 3x3 ones).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import blas
from . import dot64, kernel

if TYPE_CHECKING:
    from ..workspace import Workspace

# Bytes of one chunk's input plane and the wide planes that stay cached (see above).
CHUNK_BYTES = 1 << 19
# The most channels on the smaller side for which the direct sum beats im2col + GEMM (see above).
MOST_CHANNELS = 4


def applies(kernel: tuple[int, int], pad: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            group: int, channels: int, num_output: int) -> bool:
    """True for the convolutions this module runs: stride 1, one group, at most MOST_CHANNELS channels on
    one side; any kernel size, padding and dilation."""
    return stride == (1, 1) and group == 1 and min(channels, num_output) <= MOST_CHANNELS


def _chunks(num: int, out_h: int, row_bytes: int) -> list[tuple[int, int, int]]:
    """(n, r0, r1): bands of output rows [r0, r1) of each image, of equal height, each at most about
    CHUNK_BYTES (``row_bytes`` per output row), and at least as many bands in all as workers where the
    rows allow."""
    most = max(1, CHUNK_BYTES // row_bytes)
    bands = min(out_h, max(-(-out_h // most), -(-blas.workers() // max(num, 1))))
    rows = -(-out_h // bands)
    return [(n, r, min(r + rows, out_h)) for n in range(num) for r in range(0, out_h, rows)]


def _banded(x: np.ndarray, outputs: int, kernel_h: int, pad: tuple[int, int], dilation: tuple[int, int],
            out_h: int, scratch: "Workspace"):
    """(chunks, ``buffers(worker)``): the latter gives the worker's input plane (a band's rows, with the
    taps' halo, of row stride Wp) and its ``outputs`` wide planes (one band each)."""
    width = x.shape[3] + 2 * pad[1]
    cached = outputs if x.shape[1] > 1 else 1  # the wide planes read again for each channel, and the plane
    chunks = _chunks(x.shape[0], out_h, (cached + 1) * width * x.dtype.itemsize)
    rows = chunks[0][2] - chunks[0][1] if chunks else 0  # the tallest band

    def buffers(worker: int) -> tuple[np.ndarray, np.ndarray]:
        plane = scratch.array(f"direct_plane{worker}", ((rows + dilation[0] * (kernel_h - 1)) * width,), x.dtype)
        return plane, scratch.array(f"direct_wide{worker}", (outputs, rows * width), x.dtype)

    return chunks, buffers


def _tap_offsets(kernel: tuple[int, int], dilation: tuple[int, int], width: int) -> np.ndarray:
    """Where tap (i, j) reads a plane of row stride ``width``, relative to its output, in (i, j) order."""
    rows, columns = np.arange(kernel[0]) * dilation[0] * width, np.arange(kernel[1]) * dilation[1]
    return (rows[:, None] + columns).reshape(-1)


def convolve(x: np.ndarray, w: np.ndarray, pad: tuple[int, int], dilation: tuple[int, int], out: np.ndarray,
             bias: "np.ndarray | None", scratch: "Workspace") -> None:
    """out (N, K, Ho, Wo) = x (N, C, H, W) convolved (stride 1, ``pad``, ``dilation``; a negative pad crops)
    with w (K, C, kh, kw), plus ``bias`` (K,) when given."""
    x = np.ascontiguousarray(x)
    outputs, channels, kernel = w.shape[0], w.shape[1], w.shape[2:]
    taps = np.ascontiguousarray(w, dtype=x.dtype).reshape(outputs, channels, -1)
    offsets = _tap_offsets(kernel, dilation, x.shape[3] + 2 * pad[1])
    bias = np.zeros(outputs, x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype).reshape(-1)
    chunks, buffers = _banded(x, outputs, kernel[0], pad, dilation, out.shape[2], scratch)

    def work(worker: int, mine) -> None:
        plane, wide = buffers(worker)
        for n, r0, r1 in mine:
            _convolve_band(x, taps, offsets, n, r0, r1, *pad, bias, plane, wide, out)

    blas.parallel(work, chunks)


def weight_gradient(x: np.ndarray, dy: np.ndarray, kernel: tuple[int, int], pad: tuple[int, int],
                    dilation: tuple[int, int], scratch: "Workspace") -> np.ndarray:
    """sum over images and positions of dy times x's shifted windows: the weight gradient (K, C, kh, kw) in
    float64 of the convolution ``convolve(x, ..., pad, dilation)`` whose top diff is ``dy``."""
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    shape = (dy.shape[1], x.shape[1]) + tuple(kernel)
    offsets = _tap_offsets(kernel, dilation, x.shape[3] + 2 * pad[1])
    chunks, buffers = _banded(x, dy.shape[1], kernel[0], pad, dilation, dy.shape[2], scratch)

    def partial(worker: int) -> np.ndarray:
        return scratch.array(f"direct_dw{worker}", shape, np.float64)

    def work(worker: int, mine) -> None:
        plane, wide = buffers(worker)
        total = partial(worker)
        total.fill(0)
        for n, r0, r1 in mine:
            _weight_gradient_band(x, dy, offsets, n, r0, r1, *pad, plane, wide, total.reshape(shape[:2] + (-1,)))

    used = blas.parallel(work, chunks)
    gradient = np.zeros(shape)
    for worker in range(used):
        gradient += partial(worker)
    return gradient


@kernel()
def _load_plane(image, top, left, width, plane):  # pragma: no cover (compiled)
    """plane[r * width + q] = image[top + r, q - left], 0 outside the image (H, W), for the plane's rows.
    (Loops over views from index 0: numba's negative-index check on a loop from a variable start stops LLVM
    from vectorising it.)"""
    height, columns = image.shape
    begin = min(max(left, 0), width)  # the plane columns that the image covers: [begin, end)
    end = min(max(left + columns, begin), width)
    for r in range(plane.size // width):
        row, h = plane[r * width:(r + 1) * width], top + r
        if h < 0 or h >= height:
            row[:] = 0
            continue
        inside, line = row[begin:end], image[h, begin - left:]
        for q in range(end - begin):
            inside[q] = line[q]
        row[:begin] = 0
        row[end:] = 0


@kernel()
def _add_taps(acc, plane, offsets, weights, positions, first):  # pragma: no cover (compiled)
    """acc[f] += sum over taps t of weights[t] * plane[offsets[t] + f] for f < positions (acc = that sum when
    ``first``): three taps to a pass over acc (a third of the loads and stores of one each)."""
    taps = offsets.size
    for t in range(0, taps - 2, 3):
        a, b, c = plane[offsets[t]:], plane[offsets[t + 1]:], plane[offsets[t + 2]:]
        wa, wb, wc = weights[t], weights[t + 1], weights[t + 2]
        if first and t == 0:
            for f in range(positions):
                acc[f] = wa * a[f] + wb * b[f] + wc * c[f]
        else:
            for f in range(positions):
                acc[f] += wa * a[f] + wb * b[f] + wc * c[f]
    for t in range(taps - taps % 3, taps):
        a, wa = plane[offsets[t]:], weights[t]
        if first and t == 0:
            for f in range(positions):
                acc[f] = wa * a[f]
        else:
            for f in range(positions):
                acc[f] += wa * a[f]


@kernel()
def _convolve_band(x, w, offsets, n, r0, r1, pad_h, pad_w, bias, plane, wide, out):  # pragma: no cover (compiled)
    """Output rows [r0, r1) of image n of out: each channel's plane loaded into ``plane``, the taps (weights
    w (K, C, taps), read at ``offsets``) summed into the wide planes ``wide`` (K, >= R Wp), the valid columns
    copied out plus bias[k]."""
    channels, outputs = x.shape[1], w.shape[0]
    width, out_w, rows = x.shape[3] + 2 * pad_w, out.shape[3], r1 - r0
    positions = (rows - 1) * width + out_w  # the last row's junk columns are never read
    band = plane[:positions + offsets[-1]]  # all that the taps read
    for c in range(channels):
        _load_plane(x[n, c], r0 - pad_h, pad_w, width, band)
        for k in range(outputs):
            _add_taps(wide[k], band, offsets, w[k, c], positions, c == 0)
    for k in range(outputs):
        b = bias[k]
        for r in range(rows):
            line, valid = out[n, k, r0 + r], wide[k, r * width:r * width + out_w]
            for q in range(out_w):
                line[q] = valid[q] + b


@kernel()
def _weight_gradient_band(x, dy, offsets, n, r0, r1, pad_h, pad_w, plane, wide,
                          total):  # pragma: no cover (compiled)
    """total[k, c, t] += the band's sum of dy[n, k] times x[n, c] shifted by tap t (read at offsets[t]), output
    rows [r0, r1): dy's band is laid out wide in ``wide`` (zeros in the junk columns), each channel's plane in
    ``plane``."""
    channels, outputs = x.shape[1], dy.shape[1]
    width, rows = x.shape[3] + 2 * pad_w, r1 - r0
    positions = (rows - 1) * width + dy.shape[3]
    for k in range(outputs):
        _load_plane(dy[n, k], r0, 0, width, wide[k, :rows * width])
    band = plane[:positions + offsets[-1]]
    for c in range(channels):
        _load_plane(x[n, c], r0 - pad_h, pad_w, width, band)
        for k in range(outputs):
            for t in range(offsets.size):
                total[k, c, t] += dot64(wide[k, :positions], band[offsets[t]:offsets[t] + positions])
