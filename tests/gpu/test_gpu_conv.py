"""GPU convolution: strided-batched cuBLAS products on NCHW (no layout-copy kernels), the net's workspace,
image chunks, and the opt-in TF32 math mode."""
from __future__ import annotations

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.cuda import gemm as cublas_gemm
from memnet_engine.core.layers import convolution
from memnet_engine.core.prototxt import parse_text

from .cuda_emulator import fake_cupy
from .gpu_testing import assert_close, host


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_batched_gemm_on_strided_views(gpu, dtype, trans_a, trans_b) -> None:
    """out[i] = alpha op(a) op(b[i]) + beta out[i] for views with row and batch strides, a shared by all."""
    rs = np.random.default_rng(0)
    batch, m, k, n = 3, 4, 5, 6
    a = rs.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b_parent = rs.standard_normal((batch, 9, 8)).astype(dtype)
    b = b_parent[:, 1:1 + n, 2:2 + k] if trans_b else b_parent[:, 1:1 + k, 2:2 + n]
    out_parent = rs.standard_normal((batch, m + 2, n + 3)).astype(dtype)
    device_b, device_out = gpu.array(b_parent), gpu.array(out_parent)
    b_view = device_b[:, 1:1 + n, 2:2 + k] if trans_b else device_b[:, 1:1 + k, 2:2 + n]
    cublas_gemm.gemm(gpu.array(a), b_view, device_out[:, 1:1 + m, :n], trans_a=trans_a, trans_b=trans_b,
                     alpha=0.5, beta=2.0)
    op_b = b.transpose(0, 2, 1) if trans_b else b
    expected = out_parent.copy()
    expected[:, 1:1 + m, :n] = 0.5 * np.matmul(a.T if trans_a else a, op_b) + 2.0 * out_parent[:, 1:1 + m, :n]
    assert_close(device_out, expected, 1e-5 if dtype == np.float32 else 1e-12, "gemm")


def test_batched_gemm_refuses_mismatched_operands(gpu) -> None:
    a, b = gpu.ones((2, 3, 4)), gpu.ones((3, 4, 5))
    with pytest.raises(ValueError, match="do not agree"):
        cublas_gemm.gemm(a, b, gpu.empty((2, 3, 5)))
    with pytest.raises(ValueError, match="contiguous rows"):
        cublas_gemm.gemm(gpu.ones((4, 3)).T, gpu.ones((4, 5)), gpu.empty((3, 5)))


def test_emulated_cublas_refuses_what_cublas_would(gpu) -> None:
    if gpu is not fake_cupy:
        pytest.skip("checks of the emulator itself")
    a, c = gpu.array(np.arange(4.0, dtype=np.float32).reshape(2, 2)), gpu.empty((2, 2), np.float32)
    scalars = np.array([1.0, 0.0], np.float32)
    call = gpu.cuda.cublas.gemmStridedBatchedEx
    handle = gpu.cuda.get_cublas_handle()

    def run(k=2, lda=2, compute=68):
        call(handle, 0, 0, 2, 2, k, scalars.ctypes.data, a.data.ptr, 0, lda, 0, a.data.ptr, 0, 2, 0,
             scalars.ctypes.data + 4, c.data.ptr, 0, 2, 0, 1, compute, -1)

    run()  # column-major: c^T = a^T a^T, i.e. row-major c = a @ a
    np.testing.assert_array_equal(host(c), host(a) @ host(a))
    with pytest.raises(ValueError, match="leading dimension"):
        run(lda=1)
    with pytest.raises(RuntimeError, match="not inside one device array"):
        run(k=3)
    with pytest.raises(ValueError, match="NOT_SUPPORTED"):
        run(compute=70)  # float64 compute on float32 data


def _counting(monkeypatch) -> tuple[list[str], list[int]]:
    """Names of the kernels launched and batch sizes of the cuBLAS calls made from now on (emulator)."""
    kernels, gemms = [], []
    launch, gemm = fake_cupy.RawKernel.__call__, fake_cupy.cuda_cublas.gemmStridedBatchedEx

    def counted_launch(self, *args, **kwargs):
        kernels.append(self.kernel.name.split("<")[0])
        return launch(self, *args, **kwargs)

    def counted_gemm(*args):
        gemms.append(args[20])
        return gemm(*args)

    monkeypatch.setattr(fake_cupy.RawKernel, "__call__", counted_launch)
    monkeypatch.setattr(fake_cupy.cuda_cublas, "gemmStridedBatchedEx", counted_gemm)
    return kernels, gemms


def _conv_layer(gpu, options: str, shape, dtype=np.float32):
    param = parse_text(f'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ {options} '
                       'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.1 } }',
                       me.caffe_pb2.LayerParameter(), "conv")
    layer = me.create_layer(param, device="gpu", dtype=dtype)
    bottom, top = me.Blob(shape, dtype, "gpu"), me.Blob((), dtype, "gpu")
    bottom.data = gpu.array(np.random.default_rng(1).standard_normal(shape).astype(dtype))
    layer.setup([bottom], [top])
    return layer, bottom, top


@pytest.mark.parametrize("options, forward_kernels, backward_kernels", [
    ("num_output: 4 kernel_size: 3 pad: 1", ["im2col", "scale_bias"],
     ["channel_partial_sums", "sum_rows", "im2col", "col2im"]),
    ("num_output: 4 kernel_size: 1", ["scale_bias"], ["channel_partial_sums", "sum_rows"]),
], ids=["3x3", "1x1"])
def test_no_layout_copies_in_convolution(gpu, monkeypatch, options, forward_kernels, backward_kernels) -> None:
    """Forward and backward launch only im2col/col2im, the bias add and the bias reduction: no NCHW <->
    channel-major transposes; the products are one strided-batched cuBLAS call each over the batch."""
    if gpu is not fake_cupy:
        pytest.skip("counts launches on the emulator")
    layer, bottom, top = _conv_layer(gpu, options, (3, 6, 5, 4))
    kernels, gemms = _counting(monkeypatch)
    layer.forward([bottom], [top])
    assert kernels == forward_kernels and gemms == [3]
    kernels.clear(), gemms.clear()
    top.diff = gpu.array(np.ones(top.shape, np.float32))
    layer.backward([top], [True], [bottom])
    assert kernels == backward_kernels
    assert gemms == [3, 1, 3]  # per-image weight products, their sum (by ones), the input gradient
    assert not {"nchw_to_cm", "cm_to_nchw"} & set(kernels)


def test_gpu_image_chunks_match_one_chunk(gpu, monkeypatch) -> None:
    """A column budget below one batch cuts it into groups of images; results are the same."""
    layer, bottom, top = _conv_layer(gpu, "num_output: 4 kernel_size: 3 pad: 1 group: 2", (5, 4, 6, 5), np.float64)
    dy = gpu.array(np.random.default_rng(2).standard_normal((5, 4, 6, 5)))

    def run():
        layer.forward([bottom], [top])
        top.diff = dy
        for blob in layer.blobs:
            blob.diff = gpu.zeros(blob.shape, np.float64)
        layer.backward([top], [True], [bottom])
        return [host(top.data), host(bottom.diff)] + [host(b.diff) for b in layer.blobs]

    whole = run()
    monkeypatch.setattr(convolution, "GPU_COLUMN_BYTES", 2 * 36 * 30 * 8)  # two images of columns
    assert layer._gpu_chunks(5) == [(0, 2), (2, 4), (4, 5)]
    for ours, reference in zip(run(), whole):
        assert_close(ours, reference, 1e-13, "chunked")


def _net_text(batch: int) -> str:
    return (f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 3 dim: 12 '
            'dim: 10 } } } '
            'layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 16 '
            'kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } } '
            'layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 8 '
            'kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }')


def _outputs(gpu, math: str, dtype) -> tuple[np.ndarray, "me.Net"]:
    me.set_random_seed(7)
    net = me.Net(parse_text(_net_text(2), me.caffe_pb2.NetParameter(), "net"), phase=me.TEST, device="gpu",
                 dtype=dtype, math=math)
    net.blobs["data"].data[...] = gpu.array(np.random.default_rng(3).standard_normal((2, 3, 12, 10)).astype(dtype))
    return host(net.forward()["c2"]), net


def test_tf32_math_mode_reaches_the_gemms(gpu) -> None:
    """math="tf32" rounds float32 GEMM inputs to TF32 (the emulator does as tensor cores do): outputs move
    by about TF32's precision, and strict mode stays float32-exact; float64 ignores the mode."""
    strict, net = _outputs(gpu, "strict", np.float32)
    assert net.workspace.math == "strict" and all(layer.workspace is net.workspace for layer in net.layers)
    tf32, net = _outputs(gpu, "tf32", np.float32)
    assert net.workspace.math == "tf32"
    cpu = me.Net(parse_text(_net_text(2), me.caffe_pb2.NetParameter(), "net"), phase=me.TEST)
    for name, params in net.params.items():
        for i, blob in enumerate(params):
            cpu.params[name][i].data[...] = host(blob.data)
    reference = cpu.forward(data=np.random.default_rng(3).standard_normal((2, 3, 12, 10)))["c2"]
    assert_close(strict, reference, 1e-5, "strict")
    difference = np.abs(tf32 - reference).max() / np.abs(reference).max()
    if gpu is fake_cupy:  # a real GPU may lack tensor cores and compute TF32 mode exactly
        assert 1e-5 < difference
    assert difference < 1e-2
    exact64, _ = _outputs(gpu, "strict", np.float64)
    tf32_64, _ = _outputs(gpu, "tf32", np.float64)
    np.testing.assert_array_equal(tf32_64, exact64)


def test_bad_math_mode_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown math mode 'fast'.*strict, tf32"):
        me.Net(parse_text(_net_text(1), me.caffe_pb2.NetParameter(), "net"), math="fast")


def test_math_mode_can_be_switched_on_a_live_net() -> None:
    net = me.Net(parse_text(_net_text(1), me.caffe_pb2.NetParameter(), "net"))
    net.workspace.math = "tf32"
    assert all(layer.workspace.math == "tf32" for layer in net.layers)
    with pytest.raises(ValueError, match="unknown math mode"):
        net.workspace.math = "half"
