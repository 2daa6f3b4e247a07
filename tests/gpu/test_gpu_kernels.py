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
    u = a - shift.reshape(1, -1, 1)
    previous = rs.standard_normal(channels)
    sums, dots = gpu.array(np.full(channels, np.nan)), gpu.array(previous)  # beta 0: not read, NaN stays out
    for _ in range(2):  # the ticket counters are back at zero after a launch
        reduce.channel_sums(gpu.array(a), dims, times=gpu.array(b), shift=gpu.array(shift), sums=sums, dots=dots,
                            alpha=0.5, beta_dots=1.0)
        assert_close(sums, 0.5 * u.sum(axis=(0, 2)), 1e-12, "sum")
        previous = previous + 0.5 * (u * b).sum(axis=(0, 2))
        assert_close(dots, previous, 1e-12, "accumulated dot")
    assert not reduce.arrivals(channels).any()


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


def test_kernel_functions_are_looked_up_once(emulated, monkeypatch) -> None:
    from memnet_engine.core.cuda import loader

    gpu = emulated
    looked_up = []
    get_function = gpu.RawModule.get_function

    def counting(module, name):
        looked_up.append(name)
        return get_function(module, name)
    monkeypatch.setattr(gpu.RawModule, "get_function", counting)
    monkeypatch.setattr(loader, "_FUNCTIONS", {})
    first = loader.get_kernel("activation", "relu_forward", np.float32)
    assert loader.get_kernel("activation", "relu_forward", np.float32) is first
    x = gpu.zeros(4, np.float32)
    for _ in range(3):
        loader.launch("activation", "relu_forward", np.float32, 4, x, np.float32(0), x)
    assert looked_up == ["relu_forward<float>"]
    assert loader.get_kernel("activation", "relu_forward", np.float64) is not first
