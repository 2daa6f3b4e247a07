"""Kernel wrappers checked directly where layer tests reach only some of their range."""
from __future__ import annotations

import numpy as np
import pytest

from .gpu_testing import assert_close, host
from memnet_engine.core.cuda import reduce
from memnet_engine.core.cuda.im2col import col2im, im2col
from memnet_engine.core.layers.convolution import ConvGeometry
from memnet_engine.core.layers.convolution import col2im_add as col2im_cpu
from memnet_engine.core.layers.convolution import im2col as im2col_cpu


@pytest.mark.parametrize("dims", [(1, 1, 5000), (3, 2, 700), (1, 700, 1), (50, 3, 1), (2, 1, 1)],
                         ids=lambda d: "x".join(map(str, d)))
def test_channel_sums_over_many_chunks(gpu, dims) -> None:
    outer, channels, inner = dims
    rs = np.random.default_rng(1)
    a, b, shift = rs.standard_normal(dims), rs.standard_normal(dims), rs.standard_normal(channels)
    assert reduce.chunks_for(channels, outer * inner) >= 1
    part_sum, part_dot = reduce.partial_sums(gpu.array(a), dims, times=gpu.array(b), shift=gpu.array(shift),
                                             dots=True)
    u = a - shift.reshape(1, -1, 1)
    assert_close(reduce.finish(part_sum, alpha=0.5), 0.5 * u.sum(axis=(0, 2)), 1e-12, "sum")
    assert_close(reduce.finish(part_dot), (u * b).sum(axis=(0, 2)), 1e-12, "dot")
    previous = rs.standard_normal(channels)
    out = gpu.array(previous)
    reduce.finish(part_sum, out, beta=1.0)
    assert_close(out, previous + u.sum(axis=(0, 2)), 1e-12, "accumulate")


GEOMETRIES = [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (2, 0), (2, 1), (1, 2)), ((1, 1), (0, 0), (2, 2), (1, 1))]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["3x3", "rect_dilated", "1x1_stride2"])
def test_im2col_is_the_cpu_im2col_in_image_major_layout(gpu, geometry) -> None:
    g = ConvGeometry(*geometry)
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 6))
    out_hw = g.output_size(7, 6)
    cpu = im2col_cpu(x, g, out_hw)  # channel-major (C*kh*kw, N*P)
    rows = cpu.shape[0]
    columns = gpu.empty((2, rows, out_hw[0] * out_hw[1]), np.float64)
    im2col(gpu.array(x), g, out_hw, columns)
    np.testing.assert_array_equal(host(columns), cpu.reshape(rows, 2, -1).transpose(1, 0, 2))
    back = gpu.empty(x.shape, np.float64)
    col2im(columns, g, out_hw, back)
    expected = np.zeros_like(x)
    col2im_cpu(cpu, expected, g, out_hw)
    assert_close(back, expected, 1e-13, "col2im")
