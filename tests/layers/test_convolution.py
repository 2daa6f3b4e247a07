"""Convolution: forward against a direct loop implementation, gradient checks per configuration (with and
without the CPU's fast algorithms), im2col + GEMM's chunking (bands of rows, groups of images) and its steady
state without allocations."""
import numpy as np
import pytest
from conftest import traced_memory_of

import memnet_engine as me
from memnet_engine.core.gradcheck import check_layer
from memnet_engine.core.layers import convolution

CONFIGS = {
    "3x3_pad1": ("kernel_size: 3 pad: 1", (2, 3, 5, 4), 4),
    "stride2": ("kernel_size: 3 stride: 2", (2, 2, 7, 6), 3),
    "dilation2": ("kernel_size: 3 pad: 2 dilation: 2", (1, 2, 6, 6), 2),
    "group2": ("kernel_size: 3 pad: 1 group: 2", (2, 4, 4, 5), 4),
    "stride_group_dilation": ("kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 2", (2, 4, 7, 6), 6),
    "rect_hw_fields": ("kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2", (2, 2, 5, 6), 3),
    "1x1_nobias": ("kernel_size: 1 bias_term: false", (2, 5, 3, 4), 3),
    "1x1_stride2": ("kernel_size: 1 stride: 2", (2, 3, 5, 5), 2),
    "1x1_group2": ("kernel_size: 1 group: 2", (2, 4, 3, 3), 4),
    "rect_2x3_pad_dilation": ("kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1 dilation: 2",
                              (2, 2, 6, 7), 3),
    "single_image": ("kernel_size: 3 pad: 1", (1, 3, 4, 6), 2),
    "taps_wholly_in_padding": ("kernel_size: 3 pad: 3 stride: 2", (2, 2, 4, 5), 2),
    "pad_beyond_kernel": ("kernel_size: 3 pad: 3", (2, 2, 4, 3), 2),  # its transposed convolution crops
}


def conv_text(options: str, num_output: int) -> str:
    return (f'name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param {{ num_output: {num_output} '
            f'{options} weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def direct_convolution(x, w, b, stride, pad, dilation, group):
    """Textbook loops over every output element (independent of im2col)."""
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (width + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    og = o // group
    for i in range(n):
        for f in range(o):
            g = f // og
            for r in range(ho):
                for s in range(wo):
                    acc = 0.0 if b is None else b[f]
                    for ch in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                acc += w[f, ch, p, q] * xp[i, g * cg + ch, r * stride[0] + p * dilation[0],
                                                           s * stride[1] + q * dilation[1]]
                    y[i, f, r, s] = acc
    return y


@pytest.fixture(params=[True, False], ids=["fast", "im2col"])
def fast_convolution(request) -> bool:
    """The workspace's ``fast_convolution``: Winograd and the direct sum where they apply, or im2col + GEMM."""
    return request.param


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_direct_loops(make_layer, name, fast_convolution):
    options, shape, num_output = CONFIGS[name]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    layer._scratch.fast_convolution = fast_convolution
    layer.forward(bottoms, tops)
    g = layer.geometry
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = direct_convolution(bottoms[0].data, layer.blobs[0].data, bias, g.stride, g.pad, g.dilation, layer.group)
    np.testing.assert_allclose(tops[0].data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients(make_layer, name, fast_convolution):
    options, shape, num_output = CONFIGS[name]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    layer._scratch.fast_convolution = fast_convolution
    check_layer(layer, bottoms, tops).assert_ok()


def test_param_gradients_accumulate(make_layer):
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 2), [(1, 2, 4, 4)])
    layer.forward(bottoms, tops)
    tops[0].diff = np.ones(tops[0].shape)
    layer.backward(tops, [True], bottoms)
    once = layer.blobs[0].diff.copy()
    layer.backward(tops, [True], bottoms)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)
    np.testing.assert_allclose(layer.blobs[1].diff, [32.0, 32.0])


@pytest.mark.parametrize("options, message", [
    ("kernel_size: 3 group: 3", "group 3 must divide"),
    ("pad: 1", "kernel_size"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("kernel_size: 9", "smaller than the kernel"),
])
def test_bad_options_name_the_layer(make_layer, options, message):
    with pytest.raises(me.NetError, match=message) as info:
        make_layer(conv_text(options, 2), [(1, 4, 5, 5)])
    assert "conv" in str(info.value)


def test_fillers_follow_caffe_scales(make_layer):
    me.set_random_seed(3)
    text = ('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 64 kernel_size: 3 '
            'weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.25 } }')
    layer, _, _ = make_layer(text, [(1, 32, 5, 5)])
    weights = layer.blobs[0].data
    assert weights.shape == (64, 32, 3, 3)
    assert abs(weights.std() - np.sqrt(2.0 / (32 * 9))) < 0.01
    np.testing.assert_array_equal(layer.blobs[1].data, np.full(64, 0.25))


@pytest.mark.parametrize("name", ["3x3_pad1", "stride_group_dilation", "rect_2x3_pad_dilation", "1x1_group2",
                                  "taps_wholly_in_padding", "dilation2", "pad_beyond_kernel"])
@pytest.mark.parametrize("bands", [True, False], ids=["row_bands", "image_groups"])
def test_chunked_cpu_path_matches_and_passes_gradient_checks(make_layer, monkeypatch, name, bands) -> None:
    """A tiny column budget cuts outputs into one-row bands (written in place) or groups of whole images
    (staged channel-major); results must equal the one-chunk path."""
    options, shape, num_output = CONFIGS[name]
    shape = (3,) + shape[1:]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    layer._scratch.fast_convolution = False
    dy = np.random.default_rng(5).standard_normal(tops[0].shape)

    def run():
        layer.forward(bottoms, tops)
        tops[0].diff = dy.copy()
        for blob in layer.blobs:
            blob.diff = np.zeros(blob.shape)
        layer.backward(tops, [True], bottoms)
        return [tops[0].data.copy(), bottoms[0].diff.copy()] + [b.diff.copy() for b in layer.blobs]

    whole = run()
    image_bytes = layer._column_rows * layer.out_hw[0] * layer.out_hw[1] * 8
    monkeypatch.setattr(convolution, "CPU_COLUMN_BYTES", 1 if bands else 2 * image_bytes)
    chunks = layer._cpu_chunks(shape[0], layer.out_hw, layer._column_rows, layer.geometry.is_pointwise)
    if bands:
        assert all(n1 - n0 == 1 and r1 - r0 == 1 for n0, n1, r0, r1 in chunks)
    elif not layer.geometry.is_pointwise:
        assert max(n1 - n0 for n0, n1, _, _ in chunks) == 2 and len(chunks) == 2
    for ours, reference in zip(run(), whole):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)
    check_layer(layer, bottoms, tops).assert_ok()


def test_im2col_of_a_band_is_the_band_of_the_columns() -> None:
    g = convolution.ConvGeometry((3, 2), (1, 2), (2, 1), (1, 2))
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 6))
    out_hw = g.output_size(7, 6)
    whole = convolution.im2col(x, g, out_hw).reshape(-1, 2, out_hw[0], out_hw[1])
    for rows in [(0, 1), (1, 3), (out_hw[0] - 1, out_hw[0])]:
        band = convolution.im2col(x[1:], g, out_hw, rows)
        np.testing.assert_array_equal(band, whole[:, 1, rows[0]:rows[1]].reshape(band.shape[0], -1))


def _conv_net(channels: int, batch: int, size: int, dtype=np.float32) -> me.Net:
    convs = "".join(
        f'layer {{ name: "c{i}" type: "Convolution" bottom: "{"data" if i == 0 else f"c{i - 1}"}" top: "c{i}" '
        f'convolution_param {{ num_output: {1 if i == 2 else channels} kernel_size: {1 if i == 1 else 3} '
        f'pad: {0 if i == 1 else 1} weight_filler {{ type: "gaussian" std: 0.05 }} }} }}'
        for i in range(3))
    text = (f'layer {{ name: "in" type: "Input" top: "data" top: "label" input_param {{ shape {{ dim: {batch} '
            f'dim: 1 dim: {size} dim: {size} }} }} }} {convs} '
            'layer { name: "loss" type: "EuclideanLoss" bottom: "c2" bottom: "label" top: "loss" }')
    net = me.Net(me.core.prototxt.parse_text(text, me.caffe_pb2.NetParameter(), "conv net"), phase=me.TRAIN,
                 dtype=dtype)
    rs = np.random.default_rng(0)
    for name in ("data", "label"):
        net.blobs[name].data[...] = rs.random(net.blobs[name].shape)
    return net


@pytest.mark.parametrize("batch, size, bands", [(4, 64, False), (1, 128, True)], ids=["one_batch_gemm", "row_bands"])
def test_steady_state_steps_allocate_no_large_buffers(monkeypatch, batch, size, bands) -> None:
    """After a first step, forward + backward of the convolutions allocate no buffer: tops, bottom diffs and
    scratch columns are reused, so traced memory does not grow and peaks far below one activation (1 MiB)."""
    if bands:
        monkeypatch.setattr(convolution, "CPU_COLUMN_BYTES", 256 * 1024)
    net = _conv_net(channels=16, batch=batch, size=size)
    net.workspace.fast_convolution = False  # im2col + GEMM's chunks (the fast algorithms' own tests have theirs)
    convs = [i for i, layer in enumerate(net.layers) if layer.type == "Convolution"]
    first, last = convs[0], convs[-1]
    activation_bytes = net.blobs["c0"].count * 4

    def conv_step():
        net.forward_range(first, last)
        net.backward_range(last, first)

    net.forward_backward()
    conv_step()
    layer = net.layers[first]
    chunks = layer._cpu_chunks(batch, layer.out_hw, layer._column_rows, False)
    assert all((n1 - n0 == 1) == bands for n0, n1, _, _ in chunks)
    workspace = net.workspace.nbytes
    assert workspace > 0
    growth, peak = traced_memory_of(conv_step)
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"  # Python free lists
    assert activation_bytes == 1 << 20
    # Thread-pool bookkeeping peaks near 70 KiB; one image's activation (the smallest large buffer) is 256 KiB.
    assert peak < activation_bytes // 8, f"a step peaked {peak} bytes higher"
    assert net.workspace.nbytes == workspace
    assert np.isfinite(net.blobs["c0"].diff).all() and np.abs(net.params["c0"][0].diff).sum() > 0


@pytest.mark.parametrize("shape", [(5, 4, 6, 5), (1, 4, 12, 7)], ids=["image_groups", "row_bands"])
def test_results_do_not_depend_on_the_number_of_blas_workers(make_layer, monkeypatch, shape) -> None:
    """Chunks are shared among worker threads; partial weight and bias sums are added at the end."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1 group: 2", 4), [shape])
    dy = np.random.default_rng(6).standard_normal(tops[0].shape)
    results = []
    for workers in (1, 3):
        monkeypatch.setattr(convolution.blas, "workers", lambda: workers)
        chunks = layer._cpu_chunks(shape[0], layer.out_hw, layer._column_rows, False)
        assert len(chunks) >= workers
        layer.forward(bottoms, tops)
        tops[0].diff = dy.copy()
        for blob in layer.blobs:
            blob.diff = np.ones(blob.shape)  # gradients accumulate onto what is there
        layer.backward(tops, [True], bottoms)
        results.append([tops[0].data.copy(), bottoms[0].diff.copy()] + [b.diff.copy() for b in layer.blobs])
    for one, three in zip(*results):
        np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-12)
