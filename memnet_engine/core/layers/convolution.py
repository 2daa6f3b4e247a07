"""Convolution (2-D, Caffe's im2col + GEMM formulation) with groups, stride, pad and dilation.

Weights have shape (num_output, channels / group, kernel_h, kernel_w); bias (num_output,).
A 1x1 convolution with stride 1 and no padding is a plain GEMM on the input (no im2col).
The column buffer is made per call and dropped: backward rebuilds it from the bottom, as
Caffe does, so no layer keeps one alive.

On the GPU the columns are channel-major, (C * kh * kw, N * Ho * Wo) (see kernels/im2col.cu), so
each group is ONE cuBLAS GEMM over the whole batch; outputs come back to NCHW with the bias add
fused into that copy.  With one image (inference) the input of a pointwise convolution is already
its column matrix and the GEMM writes the output in place: no copies at all.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cuda import copy as layout
from ..cuda.gemm import gemm
from ..cuda.im2col import col2im as col2im_gpu
from ..cuda.im2col import im2col as im2col_gpu
from ..cuda.loader import contiguous, view
from ..cuda.reduce import finish, partial_sums
from ..cuda.scale_bias import scale_bias
from ..errors import NetError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


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


def im2col(xp, x, g: ConvGeometry, out_hw: tuple[int, int]):
    """(N, C, H, W) -> columns (N, C * kh * kw, Ho * Wo), in Caffe's (c, i, j) row order."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = g.kernel, g.pad, g.stride, g.dilation
    ho, wo = out_hw
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    col = xp.empty((n, c, kh, kw, ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = padded[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                                     j * dw: j * dw + sw * (wo - 1) + 1: sw]
    return col.reshape(n, c * kh * kw, ho * wo)


def col2im(xp, col, shape: tuple[int, ...], g: ConvGeometry, out_hw: tuple[int, int]):
    """Adjoint of im2col: scatter-add columns back into an (N, C, H, W) array."""
    n, c, h, w = shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = g.kernel, g.pad, g.stride, g.dilation
    ho, wo = out_hw
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), col.dtype)
    col6 = col.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw] += col6[:, :, i, j]
    return padded[:, :, ph: ph + h, pw: pw + w]


@register("Convolution")
class ConvolutionLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def backward_inputs(self) -> tuple[int, ...]:
        return (0,)  # the weight gradient reads the input (and the input gradient the weights)

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.convolution_param
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

    def _columns(self, x):
        """(N, group, C/group * kh * kw, Ho * Wo) view or buffer of the input."""
        n = x.shape[0]
        if self.geometry.is_pointwise:
            col = x.reshape(n, x.shape[1], -1)
        else:
            col = im2col(self.xp, x, self.geometry, self.out_hw)
        return col.reshape(n, self.group, -1, col.shape[-1])

    def _weights(self):
        w = self.blobs[0].data
        return w.reshape(self.group, self.num_output // self.group, -1)

    def forward_cpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        y = self.xp.matmul(self._weights(), self._columns(x))
        y = y.reshape(tops[0].shape)
        if len(self.blobs) > 1:
            y += self.blobs[1].data.reshape(1, -1, 1, 1)
        tops[0].data = y

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        xp = self.xp
        n = tops[0].shape[0]
        dy = tops[0].diff.reshape(n, self.group, self.num_output // self.group, -1)
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 3)).reshape(-1)
        if self.param_propagate_down[0]:
            col = self._columns(bottoms[0].data)
            grad = xp.matmul(dy, col.transpose(0, 1, 3, 2)).sum(axis=0)
            self.blobs[0].diff += grad.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            dcol = xp.matmul(self._weights().transpose(0, 2, 1), dy)
            shape = bottoms[0].shape
            if self.geometry.is_pointwise:
                bottoms[0].diff = dcol.reshape(shape)
            else:
                bottoms[0].diff = col2im(xp, dcol.reshape(n, -1, dcol.shape[-1]), shape, self.geometry, self.out_hw)

    # ------------------------------------------------------------------ GPU
    def _gpu_columns(self, x):
        """Channel-major columns (C * kh * kw, N * Ho * Wo) of the input."""
        if not self.geometry.is_pointwise:
            return im2col_gpu(x, self.geometry, self.out_hw)
        n, c = x.shape[:2]
        return contiguous(x).reshape(c, -1) if n == 1 else layout.to_channel_major(x)

    def _group_rows(self, matrix, g: int):
        """Rows of group ``g`` of a matrix whose rows split evenly among the groups."""
        rows = matrix.shape[0] // self.group
        return matrix[g * rows:(g + 1) * rows]

    def forward_gpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        n, spatial = x.shape[0], self.out_hw[0] * self.out_hw[1]
        col = self._gpu_columns(x)
        weights = view(self.blobs[0].data, (self.num_output, -1))
        bias = self.blobs[1].data if len(self.blobs) > 1 else None
        if n == 1:  # channel-major output is already NCHW
            y = self.xp.empty(tops[0].shape, self.dtype)
            y_cm = y.reshape(self.num_output, spatial)
        else:
            y_cm = self.xp.empty((self.num_output, n * spatial), self.dtype)
        for g in range(self.group):
            gemm(self._group_rows(weights, g), self._group_rows(col, g), self._group_rows(y_cm, g))
        del col
        if n == 1:
            if bias is not None:
                scale_bias(y, (1, self.num_output, spatial), bias=bias, out=y)
        else:
            y = layout.from_channel_major(y_cm, tops[0].shape, bias)
        tops[0].data = y

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        n, spatial = dy.shape[0], self.out_hw[0] * self.out_hw[1]
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            finish(partial_sums(dy, (n, self.num_output, spatial))[0], view(self.blobs[1].diff, -1), beta=1.0)
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        dy_cm = contiguous(dy).reshape(self.num_output, -1) if n == 1 else layout.to_channel_major(dy)
        if self.param_propagate_down[0]:
            col = self._gpu_columns(bottoms[0].data)
            dw = view(self.blobs[0].diff, (self.num_output, -1))
            for g in range(self.group):
                gemm(self._group_rows(dy_cm, g), self._group_rows(col, g), self._group_rows(dw, g),
                     trans_b=True, beta=1.0)
            del col
        if propagate_down[0]:
            weights = view(self.blobs[0].data, (self.num_output, -1))
            dcol = self.xp.empty((weights.shape[1] * self.group, n * spatial), self.dtype)
            for g in range(self.group):
                gemm(self._group_rows(weights, g), self._group_rows(dy_cm, g), self._group_rows(dcol, g),
                     trans_a=True)
            shape = bottoms[0].shape
            if not self.geometry.is_pointwise:
                bottoms[0].diff = col2im_gpu(dcol, shape, self.geometry, self.out_hw)
            elif n == 1:
                bottoms[0].diff = dcol.reshape(shape)
            else:
                bottoms[0].diff = layout.from_channel_major(dcol, shape)
