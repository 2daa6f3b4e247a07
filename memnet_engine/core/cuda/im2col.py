"""im2col / col2im kernels (kernels/im2col.cu) in the channel-major column layout.

``columns`` has shape (C * kh * kw, N * Ho * Wo): a convolution is then one GEMM per group over
the whole batch.  Geometry is a ``layers.convolution.ConvGeometry``.
"""
from __future__ import annotations

from ..backend import cupy_module
from .loader import contiguous, count_arg, ints, launch


def _geometry_args(x_shape, g, out_hw):
    n, c, h, w = x_shape
    return ints(n, c, h, w, *g.kernel, *g.pad, *g.stride, *g.dilation, *out_hw)


def im2col(x, geometry, out_hw: tuple[int, int]):
    """(N, C, H, W) -> columns (C * kh * kw, N * Ho * Wo)."""
    n, c = x.shape[:2]
    (kh, kw), spatial = geometry.kernel, out_hw[0] * out_hw[1]
    count_arg(c * kh * kw * n * spatial)  # the kernels index the whole buffer with int
    col = cupy_module().empty((c * kh * kw, n * spatial), x.dtype)
    launch("im2col", "im2col", x.dtype, c * n * spatial, contiguous(x), *_geometry_args(x.shape, geometry, out_hw),
           col)
    return col


def col2im(col, shape: tuple[int, int, int, int], geometry, out_hw: tuple[int, int]):
    """Adjoint of ``im2col``: columns -> a new (N, C, H, W) array."""
    count_arg(col.size)
    x = cupy_module().empty(shape, col.dtype)
    launch("im2col", "col2im", col.dtype, x.size, contiguous(col), *_geometry_args(shape, geometry, out_hw), x)
    return x
