"""Direct stride-1 convolution on the CPU (core/cpu/direct.py), for few channels on one side: the same results
as im2col + GEMM (float64: to rounding; float32: within the golden tolerance) at every band and image edge,
its gradient checks, where the layer chooses it, NaNs where im2col puts them, scratch that is never read
unwritten, and steady-state steps that allocate nothing large."""
import numpy as np
import pytest
from convolution_cases import (KEYS, assert_equals_im2col_gemm_to_rounding_in_float64,
                               assert_float32_is_within_the_golden_tolerance,
                               assert_steady_state_steps_allocate_no_large_buffers, run_layer)
from test_convolution import conv_text

from memnet_engine.core.cpu import direct
from memnet_engine.core.gradcheck import check_layer

# (bottom shape, num_output, options): K = 1 and C = 1 (or 2) with 3 to 64 channels on the other side; kernels 3x3,
# 1x3, 5x5, 3x5; pads 0 to 3; dilation 2; odd, even and rectangular sizes; batches of 1 and 3
SHAPES = {
    "64_to_1_odd": ((2, 64, 9, 7), 1, "kernel_size: 3 pad: 1"),
    "1_to_64_even": ((3, 1, 8, 10), 64, "kernel_size: 3 pad: 1"),
    "3_to_1_5x5_pad2": ((1, 3, 7, 6), 1, "kernel_size: 5 pad: 2"),
    "1_to_5_1x3_pad0": ((3, 1, 5, 9), 5, "kernel_h: 1 kernel_w: 3"),
    "1_to_7_dilation2": ((2, 1, 9, 8), 7, "kernel_size: 3 pad: 2 dilation: 2"),
    "9_to_1_one_output_row": ((3, 9, 3, 12), 1, "kernel_size: 3 pad: 0"),
    "1_to_3_rect_kernel_and_pads": ((1, 1, 6, 11), 3, "kernel_h: 3 kernel_w: 5 pad_h: 0 pad_w: 2"),
    "2_to_1_pad_beyond_kernel": ((2, 2, 4, 5), 1, "kernel_size: 3 pad: 3"),  # the input gradient crops
    "16_to_4_most_channels": ((2, 16, 6, 5), 4, "kernel_size: 3 pad: 1"),
    "2_to_64_several_bands": ((1, 2, 40, 128), 64, "kernel_size: 3 pad: 1"),
}


def chunks_of(layer, bottoms) -> list:
    """The (image, band) chunks of the layer's forward."""
    g = layer.geometry
    return direct._banded(bottoms[0].data, layer.num_output, g.kernel[0], g.pad, g.dilation, layer.out_hw[0],
                          layer._scratch)[0]


@pytest.fixture(params=[False, True], ids=["default_bands", "one_row_bands"])
def one_row_bands(request, monkeypatch) -> bool:
    """Bands of the default height, or of one output row each."""
    if request.param:
        monkeypatch.setattr(direct, "CHUNK_BYTES", 1)
    return request.param


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_equals_im2col_gemm_to_rounding_in_float64(make_layer, name, one_row_bands) -> None:
    shape, num_output, options = SHAPES[name]
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [shape])
    assert layer.uses_direct
    chunks = chunks_of(layer, bottoms)
    if one_row_bands:
        assert all(r1 - r0 == 1 for _, r0, r1 in chunks)
    if name.endswith("several_bands"):
        assert len(chunks) > 2
    assert_equals_im2col_gemm_to_rounding_in_float64(layer, bottoms, tops)


@pytest.mark.parametrize("channels, num_output", [(64, 1), (1, 64)])
def test_float32_is_within_the_golden_tolerance(make_layer, channels, num_output) -> None:
    assert_float32_is_within_the_golden_tolerance(make_layer, "kernel_size: 3 pad: 1", (2, channels, 20, 17),
                                                  num_output, "uses_direct")


def test_nans_are_where_im2col_puts_them(make_layer) -> None:
    """A NaN in the input spoils the outputs whose windows hold it, one in the top diff the input gradient's
    window around it: the same elements as im2col + GEMM's, padding and junk columns never leaking in.  The
    weight and bias gradients hold NaN at least where im2col's do (a junk column's 0 times NaN may add some)."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 1), [(2, 3, 6, 7)])
    bottoms[0].data[1, 2, 0, 6] = np.nan
    dy = np.random.default_rng(5).standard_normal(tops[0].shape)
    dy[0, 0, 3, 0] = np.nan
    ours, gemm = run_layer(layer, bottoms, tops, dy, True), run_layer(layer, bottoms, tops, dy, False)
    assert np.isnan(ours[0]).sum() == 4 and np.isnan(ours[1]).sum() == 3 * 6  # a corner's and an edge's windows
    for key, a, b in zip(KEYS[:2], ours, gemm):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=key)
    for key, a, b in zip(KEYS[2:], ours[2:], gemm[2:]):
        assert np.isnan(b).any() and np.all(np.isnan(a)[np.isnan(b)]), key


def test_scratch_contents_never_reach_the_results(make_layer) -> None:
    """Every scratch element that is read was written first: scratch filled with NaN changes nothing."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 2 dilation: 2", 3), [(2, 1, 9, 8)])
    dy = np.random.default_rng(6).standard_normal(tops[0].shape)
    first = run_layer(layer, bottoms, tops, dy, True)
    for buffer in layer._scratch._buffers.values():
        buffer.fill(np.nan)
    for key, a, b in zip(KEYS, run_layer(layer, bottoms, tops, dy, True), first):
        np.testing.assert_array_equal(a, b, err_msg=key)


@pytest.mark.parametrize("options, channels, num_output, chosen", [
    ("kernel_size: 3 pad: 1", 1, 64, True),
    ("kernel_size: 3 pad: 1", 64, 1, True),
    ("kernel_size: 3 pad: 1", direct.MOST_CHANNELS, 64, True),
    ("kernel_size: 3 pad: 1", 64, direct.MOST_CHANNELS + 1, False),  # Winograd's (or im2col's) turn
    ("kernel_size: 5 pad: 4 dilation: 2", 1, 8, True),
    ("kernel_h: 1 kernel_w: 3", 8, 1, True),
    ("kernel_size: 1", 1, 8, True),
    ("kernel_size: 3 pad: 1 stride: 2", 1, 8, False),
    ("kernel_size: 3 pad: 1 group: 2", 2, 2, False),
])
def test_the_layer_chooses_direct_for_stride1_convolutions_with_few_channels_on_one_side(
        make_layer, options, channels, num_output, chosen) -> None:
    layer, _, _ = make_layer(conv_text(options, num_output), [(1, channels, 9, 9)])
    assert layer.uses_direct == chosen
    assert not (layer.uses_direct and layer.uses_winograd)
    layer._scratch.fast_convolution = False
    assert not layer.uses_direct and not layer.uses_winograd


@pytest.mark.parametrize("channels, num_output, options", [
    (1, 3, "kernel_size: 3 pad: 1"), (3, 1, "kernel_size: 3 pad: 2 dilation: 2"), (2, 1, "kernel_size: 3 pad: 3"),
])
def test_gradient_check(make_layer, channels, num_output, options) -> None:
    layer, bottoms, tops = make_layer(conv_text(options, num_output), [(2, channels, 5, 6)])
    assert layer.uses_direct
    check_layer(layer, bottoms, tops).assert_ok()


def test_steady_state_steps_allocate_no_large_buffers(make_layer) -> None:
    """Planes live in the workspace; a step's temporaries are the weight gradient's float64 sum and per-image
    bias sums."""
    layer, bottoms, tops = make_layer(conv_text("kernel_size: 3 pad: 1", 1), [(2, 64, 48, 48)], dtype=np.float32)
    assert layer.uses_direct
    assert_steady_state_steps_allocate_no_large_buffers(layer, bottoms, tops)
