"""im2col / col2im kernels (kernels/im2col.cu) in the image-major column layout.

``columns`` has shape (N, C * kh * kw, Ho * Wo): image n's block is its Caffe column matrix, so a
convolution is one strided-batched GEMM per group (core/cuda/gemm.py).  Both write into arrays the
caller gives (workspace columns, a bottom diff).  Geometry is a ``layers.convolution.ConvGeometry``.
"""
from __future__ import annotations

from .loader import count_arg, ints, launch


def _geometry_args(x_shape, g, out_hw):
    h, w = x_shape[2:]
    return ints(h, w, *g.kernel, *g.pad, *g.stride, *g.dilation, *out_hw)


def _check(x, columns, geometry, out_hw) -> None:
    n, c = x.shape[:2]
    (kh, kw), spatial = geometry.kernel, out_hw[0] * out_hw[1]
    if columns.shape != (n, c * kh * kw, spatial):
        raise ValueError(f"im2col: columns of shape {columns.shape} for images {x.shape}")
    for array in (x, columns):
        if not array.flags.c_contiguous:
            raise ValueError(f"im2col: arrays must be C-contiguous (shape {array.shape})")
    count_arg(columns.size)  # the kernels index the whole buffer with int


def im2col(x, geometry, out_hw: tuple[int, int], columns) -> None:
    """(N, C, H, W) images -> ``columns`` (N, C * kh * kw, Ho * Wo)."""
    _check(x, columns, geometry, out_hw)
    n, c = x.shape[:2]
    launch("im2col", "im2col", x.dtype, n * c * out_hw[0] * out_hw[1], x, *_geometry_args(x.shape, geometry, out_hw),
           columns)


def col2im(columns, geometry, out_hw: tuple[int, int], x) -> None:
    """Adjoint of ``im2col``: overwrite the (N, C, H, W) array ``x`` with the sums of ``columns``."""
    _check(x, columns, geometry, out_hw)
    launch("im2col", "col2im", columns.dtype, x.size, columns, *_geometry_args(x.shape, geometry, out_hw), x)
