"""Batches of matrix products through cuBLAS (``cublasGemmStridedBatchedEx``), on views: nothing is copied.

Operands are row-major views whose rows are contiguous, with any row stride (the BLAS leading
dimension) and, for 3-D operands, any batch stride; a 2-D operand is the same matrix for every
product of the batch (batch stride 0).  So a convolution multiplies its weights with every image of
an NCHW batch, or with every image's im2col columns, in one call, reading and writing NCHW directly.
"""
from __future__ import annotations

import numpy as np

from ..backend import cupy_module

# cublasComputeType_t: float32 products either strict IEEE or on TF32 tensor cores; float64 exact.
COMPUTE_32F, COMPUTE_32F_FAST_TF32, COMPUTE_64F = 68, 77, 70
GEMM_DEFAULT_ALGO = -1


def _matrix(name: str, m) -> tuple[int, int, int, int, int]:
    """(batch, rows, cols, leading dimension, batch stride) of a 2-D or 3-D operand, in elements."""
    if m.ndim not in (2, 3):
        raise ValueError(f"gemm: {name} must be 2-D or 3-D (shape {m.shape})")
    item = m.itemsize
    batch, rows, cols = (1,) + m.shape if m.ndim == 2 else m.shape
    batch_stride, row_stride, col_stride = (0,) + m.strides if m.ndim == 2 else m.strides
    if ((cols > 1 and col_stride != item) or row_stride % item or batch_stride % item or batch_stride < 0
            or (rows > 1 and row_stride < cols * item)):
        raise ValueError(f"gemm: {name} needs contiguous rows (shape {m.shape}, strides {m.strides})")
    ld = max(row_stride // item if rows > 1 else cols, cols, 1)
    return batch, rows, cols, ld, batch_stride // item if batch > 1 else 0


def gemm(a, b, out, *, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0,
         math: str = "strict") -> None:
    """``out[i] = alpha * op(a[i]) @ op(b[i]) + beta * out[i]`` for every i of the batch, in place.

    ``out`` is 2-D (one product) or 3-D (batch, rows, cols); ``a`` and ``b`` are 3-D with the same
    batch, or 2-D (shared by all).  float32 or float64, one dtype; ``out`` is not read when beta is 0.
    ``math="tf32"`` lets float32 products round their inputs to TF32 (see core/workspace.py).
    """
    cp = cupy_module()
    dtype = np.dtype(out.dtype)
    if dtype not in (np.float32, np.float64) or a.dtype != dtype or b.dtype != dtype:
        raise TypeError(f"gemm: float32 or float64 operands of one dtype, got {a.dtype}, {b.dtype}, {out.dtype}")
    batch, m, n, ldc, stride_c = _matrix("out", out)
    batch_a, rows_a, cols_a, lda, stride_a = _matrix("a", a)
    batch_b, rows_b, cols_b, ldb, stride_b = _matrix("b", b)
    k = rows_a if trans_a else cols_a
    if ((cols_a, rows_a) if trans_a else (rows_a, cols_a)) != (m, k) or \
            ((cols_b, rows_b) if trans_b else (rows_b, cols_b)) != (k, n) or \
            (a.ndim == 3 and batch_a != batch) or (b.ndim == 3 and batch_b != batch):
        raise ValueError(f"gemm: shapes {a.shape}{'^T' if trans_a else ''} @ {b.shape}{'^T' if trans_b else ''} "
                         f"-> {out.shape} do not agree")
    if batch == 0 or m == 0 or n == 0:
        return
    cublas = cp.cuda.cublas
    if dtype == np.float64:
        data_type, compute = cp.cuda.runtime.CUDA_R_64F, COMPUTE_64F
    else:
        data_type, compute = cp.cuda.runtime.CUDA_R_32F, COMPUTE_32F_FAST_TF32 if math == "tf32" else COMPUTE_32F
    scalars = np.array([alpha, beta], dtype)  # host pointers (cuBLAS's default pointer mode)
    op_n, op_t = cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T
    # Row-major out = op(a) op(b) is column-major out^T = op(b)^T op(a)^T: cuBLAS sees each row-major
    # matrix as its transpose, so b comes first and the transpose flags stay as given.
    cublas.gemmStridedBatchedEx(
        cp.cuda.get_cublas_handle(), op_t if trans_b else op_n, op_t if trans_a else op_n, n, m, k,
        scalars.ctypes.data, b.data.ptr, data_type, ldb, stride_b, a.data.ptr, data_type, lda, stride_a,
        scalars.ctypes.data + dtype.itemsize, out.data.ptr, data_type, ldc, stride_c, batch, compute,
        GEMM_DEFAULT_ALGO)
