"""Convolution (2-D, Caffe's im2col + GEMM formulation) with groups, stride, pad and dilation.

Weights have shape (num_output, channels / group, kernel_h, kernel_w); bias (num_output,).
A 1x1 convolution with stride 1 and no padding is a plain GEMM on the input (no im2col).
Column matrices live in the net's workspace (core/workspace.py), reused by every layer and
iteration; backward rebuilds them from the bottom, as Caffe does, so no layer keeps one alive.

CPU (NumPy; products on BLAS worker threads, core/blas.py): the output positions are cut into
chunks, as many per core and each with about ``CPU_COLUMN_BYTES`` of columns (cache-sized), which
the workers (one thread per core, single-threaded BLAS each) share.  A batch of small images is
cut into groups of whole images in the channel-major layout (C * kh * kw, images * Ho * Wo): ONE
GEMM per group and core over its share of the batch, staged and copied back to NCHW with the bias;
a large image is cut into bands of output rows, each GEMM writing its band of the NCHW output in
place (``numpy.matmul(out=view)``).  im2col / col2im copy between the image and the columns tap by
tap with the padding clipped away (no padded copy).  Each worker sums its chunks' weight and bias
gradients (the bias as a product with ones), added to the diffs in worker order.  With stride 1
the bottom diff is itself a convolution (of the top diff with the kernels turned by 180 degrees),
computed the same way, so no col2im scatter-add is needed.  Tops and bottom diffs are written into
the blobs' own arrays and all scratch comes from the workspace: steady-state steps allocate nothing.
Unless the workspace's ``fast_convolution`` is False, two other algorithms run where they apply: 3x3
stride-1 convolutions with 8 or more channels on both sides (all of MemNet's but its first and last) by
Winograd's F(2x2, 3x3) (core/cpu/winograd.py: 2.25x fewer multiplications, as accurate), and stride-1
convolutions with few channels on one side (MemNet's first and last, 1 -> 64 and 64 -> 1) by the direct
sum (core/cpu/direct.py: no column matrix); the bias gradient stays a product with ones.

GPU (CUDA kernels + cuBLAS): columns are image-major, (N, C * kh * kw, Ho * Wo) (kernels/im2col.cu),
and each group is ONE strided-batched cuBLAS GEMM over the batch that reads and writes NCHW
directly (core/cuda/gemm.py): no layout copies.  A pointwise convolution multiplies the NCHW
input itself.  The weight gradient sums per-image products with one more GEMM (by ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import blas
from ..cpu import bn_scale_relu as unit_kernels
from ..cpu import direct, winograd
from ..cuda import gemm as cublas
from ..cuda.im2col import col2im as col2im_gpu
from ..cuda.im2col import im2col as im2col_gpu
from ..cuda.loader import contiguous, view
from ..cuda.reduce import channel_sums
from ..cuda.scale_bias import scale_bias
from ..errors import NetError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb
from ..workspace import Workspace

# Most bytes of one chunk's column matrix: the CPU keeps it in cache between im2col and the GEMM;
# the GPU cuts larger batches into groups of images.
CPU_COLUMN_BYTES = 16 << 20
# A pointwise convolution's columns are views of its input, but with a fused unit's prologue each worker
# writes them: smaller chunks keep that scratch small (whole 31x31 training images still fit).
CPU_UNIT_COLUMN_BYTES = 4 << 20
GPU_COLUMN_BYTES = 256 << 20


@dataclass(frozen=True)
class ConvGeometry:
    """Spatial options of a 2-D convolution, read as Caffe reads ConvolutionParameter."""

    kernel: tuple[int, int]
    pad: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def from_param(cls, p: pb.ConvolutionParameter, layer: str) -> "ConvGeometry":
        def pair(values, h_field, w_field, default, what):
            if p.HasField(h_field) or p.HasField(w_field):
                if values:
                    raise NetError(f"layer '{layer}': give {what} or {h_field}/{w_field}, not both")
                if not (p.HasField(h_field) and p.HasField(w_field)) and what == "kernel_size":
                    raise NetError(f"layer '{layer}': give both kernel_h and kernel_w")
                return (getattr(p, h_field), getattr(p, w_field))
            if len(values) == 0:
                if default is None:
                    raise NetError(f"layer '{layer}': kernel_size (or kernel_h/kernel_w) is required")
                return (default, default)
            if len(values) == 1:
                return (values[0], values[0])
            if len(values) == 2:
                return (values[0], values[1])
            raise NetError(f"layer '{layer}': {what} needs 1 or 2 values for a 2-D convolution, got {len(values)}")

        kernel = pair(p.kernel_size, "kernel_h", "kernel_w", None, "kernel_size")
        pad = pair(p.pad, "pad_h", "pad_w", 0, "pad")
        stride = pair(p.stride, "stride_h", "stride_w", 1, "stride")
        if len(p.dilation) > 2:
            raise NetError(f"layer '{layer}': dilation needs 1 or 2 values for a 2-D convolution")
        dilation = (tuple(p.dilation) * 2)[:2] if p.dilation else (1, 1)
        if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
            raise NetError(f"layer '{layer}': kernel, stride and dilation must be positive")
        return cls(kernel, pad, stride, dilation)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = self.kernel, self.pad, self.stride, self.dilation
        return ((height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1,
                (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1)

    @property
    def is_pointwise(self) -> bool:
        return self.kernel == (1, 1) and self.pad == (0, 0) and self.stride == (1, 1)


def _tap_range(offset: int, stride: int, size: int, begin: int, end: int) -> tuple[int, int]:
    """Output indices o in [begin, end) whose input index o * stride + offset lies in [0, size)."""
    first = max(begin, -(offset // stride))
    return first, max(first, min(end, (size - 1 - offset) // stride + 1))


def _taps(g: ConvGeometry, hw: tuple[int, int], out_w: int, rows: tuple[int, int]):
    """Per kernel tap (i, j): its valid output rows and columns, and the input slices they read.

    Yields (i, j, (row range, column range) relative to the chunk's first row, (input rows, input columns)).
    """
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = g.kernel, g.pad, g.stride, g.dilation
    for i in range(kh):
        oh0, oh1 = _tap_range(i * dh - ph, sh, hw[0], *rows)
        for j in range(kw):
            ow0, ow1 = _tap_range(j * dw - pw, sw, hw[1], 0, out_w)
            h0, w0 = oh0 * sh - ph + i * dh, ow0 * sw - pw + j * dw
            source = (slice(h0, h0 + (oh1 - oh0 - 1) * sh + 1, sh), slice(w0, w0 + (ow1 - ow0 - 1) * sw + 1, sw))
            yield i, j, ((oh0 - rows[0], oh1 - rows[0]), (ow0, ow1)), source


def im2col(x: np.ndarray, g: ConvGeometry, out_hw: tuple[int, int], rows: "tuple[int, int] | None" = None,
           out: "np.ndarray | None" = None) -> np.ndarray:
    """(N, C, H, W) -> channel-major columns (C * kh * kw, N * R * Wo) of output rows [r0, r1) (default all).

    Row (c, i, j), column (n, oh - r0, ow), as Caffe orders them; 0 where a tap falls in the padding.
    Written into ``out`` when given.
    """
    n, c, h, w = x.shape
    (kh, kw), out_w = g.kernel, out_hw[1]
    rows = (0, out_hw[0]) if rows is None else rows
    r = rows[1] - rows[0]
    if out is None:
        out = np.empty((c * kh * kw, n * r * out_w), x.dtype)
    col = out.reshape(c, kh, kw, n, r, out_w)
    images = x.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    for i, j, ((a, b), (p, q)), (hs, ws) in _taps(g, (h, w), out_w, rows):
        tap = col[:, i, j]
        tap[:, :, :a] = 0
        tap[:, :, b:] = 0
        tap[:, :, a:b, :p] = 0
        tap[:, :, a:b, q:] = 0
        if a < b and p < q:  # (an empty tap's input slices are not empty: they may wrap around)
            tap[:, :, a:b, p:q] = images[:, :, hs, ws]
    return out


def col2im_add(col: np.ndarray, x: np.ndarray, g: ConvGeometry, out_hw: tuple[int, int],
               rows: "tuple[int, int] | None" = None) -> None:
    """Adjoint of ``im2col``: add the columns of output rows [r0, r1) into the (N, C, H, W) array ``x``."""
    n, c, h, w = x.shape
    (kh, kw), out_w = g.kernel, out_hw[1]
    rows = (0, out_hw[0]) if rows is None else rows
    col = col.reshape(c, kh, kw, n, rows[1] - rows[0], out_w)
    images = x.transpose(1, 0, 2, 3)
    for i, j, ((a, b), (p, q)), (hs, ws) in _taps(g, (h, w), out_w, rows):
        if a < b and p < q:
            images[:, :, hs, ws] += col[:, i, j, :, a:b, p:q]


def _band(array, chunk: tuple[int, int, int, int]):
    """Positions of a one-image chunk (n0, n1, r0, r1) in an (N, channels, H, W) array: a (channels, positions) view."""
    n0, _, r0, r1 = chunk
    width = array.shape[3]
    return array[n0].reshape(array.shape[1], -1)[:, r0 * width:r1 * width]


def _group(matrix, g: int, groups: int):
    """Rows of group ``g`` of a matrix (or batch of matrices) whose rows split evenly among the groups."""
    rows = matrix.shape[-2] // groups
    return matrix[..., g * rows:(g + 1) * rows, :]


def _column_bytes(prologue: "tuple | None") -> int:
    """The most bytes of one chunk's columns (see CPU_UNIT_COLUMN_BYTES)."""
    return CPU_COLUMN_BYTES if prologue is None else CPU_UNIT_COLUMN_BYTES


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, *, trans_a: bool = False, trans_b: bool = False) -> None:
    """``out = op(a) @ op(b)`` through NumPy's BLAS, straight into ``out`` (any view with contiguous rows)."""
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


@register("Convolution")
class ConvolutionLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    # Scratch memory and GEMM precision: the net's (Net sets it), or the layer's own when used alone.
    workspace: "Workspace | None" = None

    def backward_inputs(self) -> tuple[int, ...]:
        return (0,)  # the weight gradient reads the input (and the input gradient the weights)

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.convolution_param
        if tops[0] is bottoms[0]:
            raise NetError(f"layer '{self.name}': a Convolution cannot work in place (its top is its bottom "
                           f"'{self.param.bottom[0]}'): name its top differently")
        if p.axis != 1 or bottoms[0].num_axes != 4:
            raise NetError(f"layer '{self.name}': only 2-D convolution of (N, C, H, W) blobs on axis 1 is "
                           f"supported (bottom shape {bottoms[0].shape})")
        self.geometry = ConvGeometry.from_param(p, self.name)
        self.num_output, self.group = int(p.num_output), int(p.group)
        channels = bottoms[0].shape[1]
        if self.num_output < 1:
            raise NetError(f"layer '{self.name}': num_output must be given and positive")
        if self.group < 1 or channels % self.group or self.num_output % self.group:
            raise NetError(f"layer '{self.name}': group {self.group} must divide both the input channels "
                           f"({channels}) and num_output ({self.num_output})")
        if self.blobs:
            return
        weight_shape = (self.num_output, channels // self.group) + self.geometry.kernel
        self.blobs.append(self.new_param(weight_shape, p.weight_filler))
        if p.bias_term:
            self.blobs.append(self.new_param((self.num_output,), p.bias_filler))

    def reshape(self, bottoms, tops) -> None:
        n, c, h, w = bottoms[0].shape
        if c != self.blobs[0].shape[1] * self.group:
            raise NetError(f"layer '{self.name}': input has {c} channels, weights expect "
                           f"{self.blobs[0].shape[1] * self.group}")
        self.out_hw = self.geometry.output_size(h, w)
        if min(self.out_hw) < 1:
            raise NetError(f"layer '{self.name}': input {h}x{w} is smaller than the kernel")
        tops[0].reshape((n, self.num_output) + self.out_hw)

    # ------------------------------------------------------------------ shared
    @property
    def _scratch(self) -> Workspace:
        if self.workspace is None:
            self.workspace = Workspace(self.device)
        return self.workspace

    @property
    def _column_rows(self) -> int:
        """Rows of the column matrix: C * kh * kw."""
        return self.blobs[0].count_range(1) * self.group

    def _weights(self, array):
        """Weights (or their diff) as the (num_output, C / group * kh * kw) matrix, a view."""
        return view(array, (self.num_output, -1))

    @property
    def uses_winograd(self) -> bool:
        """True when the CPU runs this convolution by Winograd's F(2x2, 3x3) (core/cpu/winograd.py)."""
        return self._fast_algorithm_applies(winograd)

    @property
    def uses_direct(self) -> bool:
        """True when the CPU runs this convolution by the direct sum (core/cpu/direct.py)."""
        return self._fast_algorithm_applies(direct)

    def _fast_algorithm_applies(self, algorithm) -> bool:
        """Whether ``algorithm`` (a core/cpu module) runs this convolution: it applies, and the workspace
        allows fast convolutions."""
        g = self.geometry
        return self._scratch.fast_convolution and algorithm.applies(g.kernel, g.pad, g.stride, g.dilation, self.group,
                                                                    self.blobs[0].shape[1], self.num_output)

    @property
    def accepts_prologue(self) -> bool:
        """True when the CPU path can apply a fused BatchNorm unit to the input as it reads it (an input
        prologue, layers/unit_convolution.py): Winograd's input transform, or a pointwise GEMM's chunks."""
        return self.uses_winograd or (self.geometry.is_pointwise and not self.uses_direct)

    def _check_prologue(self, prologue: "tuple | None") -> None:
        if prologue is not None and not self.accepts_prologue:
            raise RuntimeError(f"'{self.name}': an input prologue needs the Winograd or the pointwise GEMM path")

    def _gemm(self, gemm, a, b, out, **options) -> None:
        """One product per group (``gemm`` is ``_matmul`` or cuBLAS's): rows of a, b and out split evenly."""
        for g in range(self.group):
            gemm(_group(a, g, self.group), _group(b, g, self.group), _group(out, g, self.group), **options)

    # ------------------------------------------------------------------ CPU
    def _cpu_chunks(self, num: int, out_hw: tuple[int, int], column_rows: int, pointwise: bool,
                    prologue: "tuple | None" = None) -> list[tuple[int, int, int, int]]:
        """(n0, n1, r0, r1): images [n0, n1), output rows [r0, r1) of each; as many chunks per worker and
        about ``_column_bytes(prologue)`` of columns at most.  Several images only when whole images fit (their
        outputs are staged channel-major); a pointwise convolution goes image by image (its columns are the
        input)."""
        if num == 0:
            return []
        out_h, out_w = out_hw
        row_bytes, column_bytes = out_w * column_rows * self.dtype.itemsize, _column_bytes(prologue)
        workers = blas.workers()
        pieces = -(-num * out_h * row_bytes // (column_bytes * workers)) * workers  # a multiple of workers
        if pieces <= num and not pointwise:
            bounds = [num * k // pieces for k in range(pieces + 1)]
            return [(a, b, 0, out_h) for a, b in zip(bounds, bounds[1:])]
        rows = max(1, min(-(-out_h // -(-pieces // num)), column_bytes // row_bytes))
        return [(n, n + 1, r, min(r + rows, out_h)) for n in range(num) for r in range(0, out_h, rows)]

    def _cpu_columns(self, x, chunk, geometry: ConvGeometry, out_hw: tuple[int, int], column_rows: int,
                     worker: int, prologue: "tuple | None" = None):
        """Column matrix (column_rows, positions) of a chunk: a view of the input when pointwise, or with a
        ``prologue`` (pointwise only) the fused BatchNorm unit applied to it, in scratch."""
        if geometry.is_pointwise:
            band = _band(x, chunk)
            if prologue is None:
                return band
            return unit_kernels.forward_rows(band, prologue, self._scratch.array(f"unit_columns{worker}", band.shape,
                                                                                 self.dtype))
        n0, n1, r0, r1 = chunk
        shape = (column_rows, (n1 - n0) * (r1 - r0) * out_hw[1])
        return im2col(x[n0:n1], geometry, out_hw, (r0, r1), self._scratch.array(f"columns{worker}", shape, self.dtype))

    def _convolve_cpu(self, x, weights, geometry: ConvGeometry, out, bias=None, prologue=None) -> None:
        """out (N, O, Ho, Wo) = x (N, I, H, W) convolved with ``weights`` (O, I / group * kh * kw), + bias;
        chunks shared among the BLAS workers, each with its own scratch slots; ``prologue``: see
        ``_cpu_columns``."""
        num, channels, out_h, out_w = out.shape
        column_rows, spatial, scratch = weights.shape[1] * self.group, out_h * out_w, self._scratch

        def work(worker: int, chunks) -> None:
            for chunk in chunks:
                columns = self._cpu_columns(x, chunk, geometry, (out_h, out_w), column_rows, worker, prologue)
                n0, n1 = chunk[:2]
                if n1 - n0 == 1:  # the product lands in the output band in place
                    band = _band(out, chunk)
                    self._gemm(_matmul, weights, columns, band)
                    if bias is not None:
                        band += bias.reshape(-1, 1)
                    continue
                staged = scratch.array(f"conv_out{worker}", (channels, columns.shape[1]), self.dtype)
                self._gemm(_matmul, weights, columns, staged)
                staged = staged.reshape(channels, n1 - n0, spatial)
                for i in range(n1 - n0):  # image by image: 2-D copies, no NumPy ufunc buffers
                    image = out[n0 + i].reshape(channels, spatial)
                    np.copyto(image, staged[:, i])
                    if bias is not None:
                        image += bias.reshape(-1, 1)

        blas.parallel(work, self._cpu_chunks(num, (out_h, out_w), column_rows, geometry.is_pointwise, prologue))

    def _transposed(self) -> "tuple[np.ndarray, ConvGeometry]":
        """The stride-1 convolution of the top diff that gives the bottom diff: its weights
        (C, num_output / group * kh * kw), the kernels turned by 180 degrees, and its geometry."""
        (kh, kw), (ph, pw), (dh, dw) = self.geometry.kernel, self.geometry.pad, self.geometry.dilation
        w = self.blobs[0].data
        per_group, channels = self.num_output // self.group, w.shape[1]
        flipped = self._scratch.array("flipped_weights", (self.group * channels, per_group * kh * kw), self.dtype)
        np.copyto(flipped.reshape(self.group, channels, per_group, kh, kw),
                  w.reshape(self.group, per_group, channels, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4))
        return flipped, ConvGeometry((kh, kw), (dh * (kh - 1) - ph, dw * (kw - 1) - pw), (1, 1), (dh, dw))

    def _own_array(self, blob, current, *others):
        """``current`` (a blob's array) to write into, or a new one where it would overwrite one of ``others``."""
        if any(np.may_share_memory(current, other) for other in others):
            current = np.empty(blob.shape, self.dtype)
        return current

    def forward_cpu(self, bottoms, tops, prologue: "tuple | None" = None) -> None:
        """``prologue``: a fused BatchNorm unit's activation applied to the input first (``accepts_prologue``;
        see core/cpu/winograd.py ``convolve``, ``_cpu_columns``; layers/unit_convolution.py)."""
        self._check_prologue(prologue)
        x = bottoms[0].data
        y = self._own_array(tops[0], tops[0].data, x)
        bias = self.blobs[1].data if len(self.blobs) > 1 else None
        if self.uses_winograd:
            winograd.convolve(x, self._winograd_kernels(), self.geometry.pad, y, bias, self._scratch, prologue)
        elif self.uses_direct:
            direct.convolve(x, self.blobs[0].data, self.geometry.pad, self.geometry.dilation, y, bias, self._scratch)
        else:
            self._convolve_cpu(x, self._weights(self.blobs[0].data), self.geometry, y, bias, prologue)
        tops[0].data = y

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        """Winograd's or the direct backward where they apply; else im2col + GEMM: the bottom diff is a
        convolution of the top diff (stride 1), or the columns' product scattered back by col2im (one worker:
        the chunks' input windows overlap)."""
        x, dy = bottoms[0].data, tops[0].diff
        dx = self._own_array(bottoms[0], bottoms[0].diff, dy, x) if propagate_down[0] else None
        self.gradients_cpu(x, dy, dx)
        if dx is not None:
            bottoms[0].diff = dx

    def gradients_cpu(self, x, dy, dx, prologue: "tuple | None" = None) -> None:
        """The parameters' gradients (accumulated) and, into ``dx`` when given, the input's, from the input x
        and the top diff dy; ``prologue``: as in ``forward_cpu`` (x is then the fused unit's input)."""
        self._check_prologue(prologue)
        want_bias = len(self.blobs) > 1 and self.param_propagate_down[1]
        want_weights = self.param_propagate_down[0]
        if not (self.uses_winograd or self.uses_direct):
            self._backward_gemm(x, dy, dx, want_bias, want_weights, prologue)
            return
        if want_bias:
            self._add_bias_gradient(dy)
        if want_weights:
            weight_diff = self.blobs[0].diff
            weight_diff += self._fast_gradients(x, dy, dx, prologue)
        elif dx is not None:
            self._fast_input_gradient(dy, dx)

    def _add_bias_gradient(self, dy) -> None:
        """The bias diff += dy summed over images and positions, as per-image products with ones."""
        num, spatial = dy.shape[0], self.out_hw[0] * self.out_hw[1]
        per_image = np.matmul(dy.reshape(num, self.num_output, spatial), self._scratch.ones(spatial, self.dtype))
        bias_diff = view(self.blobs[1].diff, -1)
        for image in per_image:
            bias_diff += image

    def _winograd_kernels(self, turned: bool = False) -> np.ndarray:
        """``winograd.kernel_transform`` of the weights, once per pass of the net for all the convolutions that
        share them (MemNet's recursions)."""
        weights = self.blobs[0].data
        key = ("winograd", weights.__array_interface__["data"][0], weights.shape, weights.dtype.str, turned)
        return self._scratch.per_pass(key, lambda: winograd.kernel_transform(weights, turned=turned))

    def _fast_gradients(self, x, dy, dx, prologue=None):
        """The weight gradient (float64) and, into ``dx`` when given, the input's, by Winograd's algorithm
        (core/cpu/winograd.py: one pass for both where it can) or the direct sum (core/cpu/direct.py)."""
        g = self.geometry
        if self.uses_winograd:
            turned = None if dx is None else self._winograd_kernels(turned=True)
            return winograd.weight_gradient(x, dy, g.pad, self._scratch, prologue, turned, dx)
        weight_gradient = direct.weight_gradient(x, dy, g.kernel, g.pad, g.dilation, self._scratch)
        if dx is not None:
            self._fast_input_gradient(dy, dx)
        return weight_gradient

    def _fast_input_gradient(self, dy, dx) -> None:
        """dx = dy convolved with the kernels turned by 180 degrees, by Winograd's algorithm or the direct sum
        (``_transposed``'s kernels and geometry)."""
        if self.uses_winograd:
            winograd.input_gradient(dy, self._winograd_kernels(turned=True), self.geometry.pad, dx, self._scratch)
            return
        flipped, transposed = self._transposed()
        direct.convolve(dy, flipped.reshape(-1, self.num_output, *self.geometry.kernel), transposed.pad,
                        transposed.dilation, dx, None, self._scratch)

    def _backward_gemm(self, x, dy, dx, want_bias: bool, want_weights: bool, prologue=None) -> None:
        """im2col + GEMM backward, as Caffe computes it (``prologue``: pointwise, see ``_cpu_columns``)."""
        want_input = dx is not None
        scatter = want_input and self.geometry.stride != (1, 1)
        if scatter:
            dx.fill(0)  # col2im adds every chunk's columns
        if want_bias or want_weights or scatter:
            self._parameter_gradients_cpu(x, dy, want_bias, want_weights, dx if scatter else None, prologue)
        if want_input and not scatter:
            self._convolve_cpu(dy, *self._transposed(), dx)

    def _parameter_gradients_cpu(self, x, dy, want_bias: bool, want_weights: bool, scatter_into=None,
                                 prologue=None) -> None:
        """Bias and weight gradients chunk by chunk: each worker sums its chunks' products (the bias gradient
        as a product with ones), then the sums are added to the diffs in worker order (deterministic).  With
        ``scatter_into`` also the bottom diff by col2im."""
        num, spatial, scratch = x.shape[0], self.out_hw[0] * self.out_hw[1], self._scratch
        chunks = self._cpu_chunks(num, self.out_hw, self._column_rows, self.geometry.is_pointwise, prologue)
        weight_diff = self._weights(self.blobs[0].diff)
        ones = scratch.ones(max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in chunks) * self.out_hw[1], self.dtype)

        def sums(worker: int, what: str = "sum"):
            """A worker's (weight, bias) gradient sums, or with ``what="product"`` its scratch for one chunk."""
            return (scratch.array(f"weight_{what}{worker}", weight_diff.shape, self.dtype) if want_weights else None,
                    scratch.array(f"bias_{what}{worker}", (self.num_output,), self.dtype) if want_bias else None)

        def work(worker: int, mine) -> None:
            weight_sum, bias_sum = sums(worker)
            for index, chunk in enumerate(mine):
                n0, n1, r0, r1 = chunk
                if n1 - n0 == 1:
                    dy_chunk = _band(dy, chunk)
                else:
                    dy_chunk = scratch.array(f"conv_out{worker}", (self.num_output, (n1 - n0) * spatial), self.dtype)
                    staged = dy_chunk.reshape(self.num_output, n1 - n0, spatial)
                    for i in range(n1 - n0):
                        np.copyto(staged[:, i], dy[n0 + i].reshape(self.num_output, spatial))
                # the first chunk's products go straight into the sums, later ones through scratch
                weight_product, bias_product = (weight_sum, bias_sum) if index == 0 else sums(worker, "product")
                if want_bias:
                    np.matmul(dy_chunk, ones[:dy_chunk.shape[1]], out=bias_product)
                if want_weights:
                    columns = self._cpu_columns(x, chunk, self.geometry, self.out_hw, self._column_rows, worker,
                                                prologue)
                    self._gemm(_matmul, dy_chunk, columns, weight_product, trans_b=True)
                if index:
                    for total, product in ((weight_sum, weight_product), (bias_sum, bias_product)):
                        if product is not None:
                            total += product
                if scatter_into is not None:
                    dcol = scratch.array(f"columns{worker}", (self._column_rows, dy_chunk.shape[1]), self.dtype)
                    self._gemm(_matmul, self._weights(self.blobs[0].data), dy_chunk, dcol, trans_a=True)
                    col2im_add(dcol, scatter_into[n0:n1], self.geometry, self.out_hw, (r0, r1))

        used = blas.parallel(work, chunks, serial=scatter_into is not None)
        bias_diff = view(self.blobs[1].diff, -1) if want_bias else None
        for worker in range(used):
            for total, partial in zip((weight_diff, bias_diff), sums(worker)):
                if partial is not None:
                    total += partial

    # ------------------------------------------------------------------ GPU
    def _gpu_chunks(self, num: int) -> list[tuple[int, int]]:
        """Image ranges [n0, n1) whose columns fit GPU_COLUMN_BYTES (at least one image each)."""
        if self.geometry.is_pointwise:
            return [(0, num)]
        per_image = self._column_rows * self.out_hw[0] * self.out_hw[1] * self.dtype.itemsize
        step = max(1, GPU_COLUMN_BYTES // per_image)
        return [(n, min(n + step, num)) for n in range(0, num, step)]

    def _gpu_columns(self, x):
        """Image-major columns (n, C * kh * kw, Ho * Wo) of images ``x``: the input itself when pointwise."""
        n = x.shape[0]
        if self.geometry.is_pointwise:
            return x.reshape(n, x.shape[1], -1)
        columns = self._scratch.array("columns", (n, self._column_rows, self.out_hw[0] * self.out_hw[1]), self.dtype)
        im2col_gpu(x, self.geometry, self.out_hw, columns)
        return columns

    def _cublas(self, a, b, out, **options) -> None:
        self._gemm(cublas.gemm, a, b, out, math=self._scratch.math, **options)

    def forward_gpu(self, bottoms, tops) -> None:
        x = contiguous(bottoms[0].data)
        n, spatial = x.shape[0], self.out_hw[0] * self.out_hw[1]
        y = self.xp.empty(tops[0].shape, self.dtype)
        out = y.reshape(n, self.num_output, spatial)
        weights = self._weights(self.blobs[0].data)
        for n0, n1 in self._gpu_chunks(n):
            self._cublas(weights, self._gpu_columns(x[n0:n1]), out[n0:n1])
        if len(self.blobs) > 1:
            scale_bias(y, (n, self.num_output, spatial), bias=self.blobs[1].data, out=y)
        tops[0].data = y

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = contiguous(tops[0].diff)
        n, spatial = dy.shape[0], self.out_hw[0] * self.out_hw[1]
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            channel_sums(dy, (n, self.num_output, spatial), sums=view(self.blobs[1].diff, -1), beta_sums=1.0)
        want_weights, want_input = self.param_propagate_down[0], propagate_down[0]
        if not (want_weights or want_input):
            return
        x = contiguous(bottoms[0].data)
        dy = dy.reshape(n, self.num_output, spatial)
        dx = self.xp.empty(bottoms[0].shape, self.dtype) if want_input else None
        weights = self._weights(self.blobs[0].data)
        for n0, n1 in self._gpu_chunks(n):
            if want_weights:
                self._weight_gradient_gpu(dy[n0:n1], self._gpu_columns(x[n0:n1]))
            if not want_input:
                continue
            if self.geometry.is_pointwise:
                self._cublas(weights, dy[n0:n1], dx[n0:n1].reshape(n1 - n0, dx.shape[1], spatial), trans_a=True)
                continue
            dcol = self._scratch.array("columns", (n1 - n0, self._column_rows, spatial), self.dtype)
            self._cublas(weights, dy[n0:n1], dcol, trans_a=True)
            col2im_gpu(dcol, self.geometry, self.out_hw, dx[n0:n1])
        if want_input:
            bottoms[0].diff = dx

    def _weight_gradient_gpu(self, dy, columns) -> None:
        """dW += sum over images of dy[n] @ columns[n]^T: per-image products, then one GEMM by ones."""
        dw = self._weights(self.blobs[0].diff)
        num = dy.shape[0]
        if num == 1:
            self._cublas(dy[0], columns[0], dw, trans_b=True, beta=1.0)
            return
        partial = self._scratch.array("weight_partials", (num,) + dw.shape, self.dtype)
        self._cublas(dy, columns, partial, trans_b=True)
        # The sum is memory-bound: strict float32 whatever the math mode.
        cublas.gemm(self._scratch.ones(num, self.dtype).reshape(1, num), partial.reshape(num, -1),
                    view(dw, (1, -1)), beta=1.0)
