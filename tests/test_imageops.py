"""MATLAB-compatible image operations against hand-derived values and exact properties."""
import math

import numpy as np
import pytest
from PIL import Image
from scipy.signal import correlate2d

from memnet_engine.memnet.imageops import (imresize, jpeg_roundtrip, luminance, modcrop, psnr, rgb2gray, rgb2ycbcr,
                                    shave, ssim, to_uint8, ycbcr2rgb)
from memnet_engine.memnet.imageops.resize import contributions, cubic


def test_cubic_kernel_values():
    x = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5])
    expected = [1, 0.8671875, 0.5625, 0.2265625, 0, -0.0703125, -0.0625, -0.0234375, 0, 0]
    np.testing.assert_allclose(cubic(x), expected, atol=1e-15)


def test_upscale_by_two_first_pixel_by_hand():
    # x = 1: u = 1/2 + 0.25 = 0.75, taps at 1-based -1, 0, 1, 2 (distances 1.75, 0.75, -0.25, -1.25);
    # indices -1 and 0 mirror to 2 and 1 -> weight on a1: 0.2265625 + 0.8671875, on a2: -0.0234375 - 0.0703125.
    row = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = imresize(row, 2)
    assert out.shape == (2, 8)
    assert out[0, 0] == pytest.approx(1.09375 * 0.0 - 0.09375 * 1.0, abs=1e-14)
    np.testing.assert_array_equal(out[0], out[1])  # one input row -> every tap mirrors onto it


def test_downscale_by_two_antialiased_weights_by_hand():
    # scale 1/2: kernel 0.5*cubic(0.5 x), width 8; x = 1 -> u = 1.5, taps at 1-based -2..5 with distances
    # 3.5 .. -3.5; indices -2, -1, 0 mirror to 3, 2, 1.
    half = 0.5 * cubic(0.5 * np.array([3.5, 2.5, 1.5, 0.5]))
    weights = np.concatenate([half, half[::-1]])
    taps_1based = [3, 2, 1, 1, 2, 3, 4, 5]
    signal = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 6.0])
    expected = sum(w * signal[i - 1] for w, i in zip(weights, taps_1based))
    out = imresize(signal[:, None] * np.ones((1, 8)), output_shape=(4, 8))
    assert out[0, 0] == pytest.approx(expected, abs=1e-13)
    w, idx = contributions(8, 4, 0.5)
    assert w.shape == (4, 8)  # ceil(4 / 0.5) + 2 = 10 taps, the two zero-weight columns dropped
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-14)


def test_contributions_mirror_at_both_ends():
    # 5 -> 15 (scale 3): taps are floor(u - 2) + 0..5; the first and last tap always weigh 0 and are
    # dropped. x = 1: u = 2/3, taps -1, 0, 1, 2 -> [2, 1, 1, 2]; x = 15: u = 16/3, taps 4..7 -> [4, 5, 5, 4].
    weights, idx = contributions(5, 15, 3.0)
    assert weights.shape == (15, 4)
    assert idx[0].tolist() == [1, 0, 0, 1]
    assert idx[-1].tolist() == [3, 4, 4, 3]


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2, 3, 4, 0.7])
def test_constant_image_stays_constant(scale):
    img = np.full((37, 29), 0.3)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(37 * scale), math.ceil(29 * scale))
    np.testing.assert_allclose(out, 0.3, atol=1e-14)
    out8 = imresize(np.full((37, 29, 3), 77, np.uint8), scale)
    assert out8.dtype == np.uint8 and np.all(out8 == 77)


def test_upscaling_reproduces_a_linear_ramp_away_from_borders():
    # Keys' cubic reproduces quadratics; MATLAB maps output x to u = x/s + 0.5(1 - 1/s).
    n, s = 20, 3
    ramp = np.tile(np.arange(1, n + 1, dtype=float), (4, 1))
    out = imresize(ramp, s)
    u = np.arange(1, n * s + 1) / s + 0.5 * (1 - 1 / s)
    inner = slice(3 * s, (n - 3) * s)
    np.testing.assert_allclose(out[0, inner], u[inner], atol=1e-12)


def test_output_size_and_axis_order():
    assert imresize(np.zeros((10, 7)), 1 / 3).shape == (4, 3)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 18), dtype=np.uint8)

    def one_axis(x, axis, n):
        shape = list(x.shape)
        shape[axis] = n
        return imresize(x, output_shape=shape)

    # rows shrink (scale 0.5) and columns grow (scale 2): MATLAB resizes rows first, rounding in between
    out = imresize(img, output_shape=(12, 36))
    rows_first = one_axis(one_axis(img, 0, 12), 1, 36)
    cols_first = one_axis(one_axis(img, 1, 36), 0, 12)
    np.testing.assert_array_equal(out, rows_first)
    assert not np.array_equal(rows_first, cols_first)
    # the opposite case resizes columns first
    np.testing.assert_array_equal(imresize(img, output_shape=(48, 9)), one_axis(one_axis(img, 1, 9), 0, 48))


def test_uint8_matches_rounded_double_for_one_axis():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (1, 40), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, output_shape=(1, 13)),
                                  to_uint8(imresize(img.astype(float), output_shape=(1, 13))))


def test_imresize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 2, (8, 8))


def test_to_uint8_rounds_half_away_from_zero_and_saturates():
    np.testing.assert_array_equal(to_uint8(np.array([0.5, 1.5, 2.5, 254.5, 300, -3, 2.4999])),
                                  [1, 2, 3, 255, 255, 0, 2])


def test_rgb2ycbcr_known_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, Cb/Cr likewise, then rounded
    expected = [[16, 128, 128], [235, 128, 128], [81, 90, 240], [145, 54, 34], [41, 240, 110]]
    np.testing.assert_array_equal(rgb2ycbcr(colours)[0], expected)
    double = rgb2ycbcr(colours.astype(float) / 255)
    assert double.dtype == np.float64
    np.testing.assert_allclose(double[0, 2] * 255, [81.481, 90.203, 240.0], atol=1e-10)


def test_ycbcr_roundtrip():
    rng = np.random.default_rng(3)
    rgb = rng.random((9, 11, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, atol=1e-12)
    rgb8 = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    back = ycbcr2rgb(rgb2ycbcr(rgb8))
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - rgb8).max() <= 3
    np.testing.assert_array_equal(ycbcr2rgb(np.array([[[16, 128, 128], [235, 128, 128]]], np.uint8))[0],
                                  [[0, 0, 0], [255, 255, 255]])


def test_rgb2gray_uses_matlab_ntsc_weights():
    ntsc_inverse = np.linalg.inv([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    eye = np.eye(3)[None]
    np.testing.assert_allclose(rgb2gray(eye)[0], ntsc_inverse[0], atol=1e-12)
    assert rgb2gray(np.array([[[255, 255, 255], [10, 200, 30]]], np.uint8)).tolist() == [[255, 124]]


def test_luminance_of_gray_and_colour():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert luminance(gray) is gray
    colour = np.stack([gray] * 3, axis=-1)
    np.testing.assert_array_equal(luminance(colour), rgb2ycbcr(colour)[..., 0])


def test_modcrop_and_shave():
    img = np.arange(11 * 14).reshape(11, 14)
    assert modcrop(img, 3).shape == (9, 12)
    np.testing.assert_array_equal(modcrop(img, 3), img[:9, :12])
    np.testing.assert_array_equal(shave(img, 2), img[2:9, 2:12])
    assert modcrop(np.zeros((11, 14, 3)), 4).shape == (8, 12, 3)
    with pytest.raises(ValueError):
        shave(img, 6)


def test_psnr_known_values():
    a = np.full((8, 8), 100.0)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)
    b = a.copy()
    b[0, :4] += 16  # mse = 4 * 256 / 64 = 16
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 4), abs=1e-12)


def _ssim_direct(a, b):
    """ssim_index.m written out literally with a 2-D fspecial window and filter2(..., 'valid')."""
    x = np.arange(11) - 5.0
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5 ** 2))
    window /= window.sum()

    def f(img):
        return correlate2d(img, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - mu1 ** 2, f(b * b) - mu2 ** 2, f(a * b) - mu1 * mu2
    return np.mean((2 * mu1 * mu2 + c1) * (2 * s12 + c2) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2)))


def test_ssim_matches_literal_ssim_index():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (30, 41)).astype(float)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_direct(a, b), abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_offset_closed_form():
    c, d = 100.0, 10.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * c * (c + d) + c1) / (c * c + (c + d) ** 2 + c1)
    assert ssim(np.full((16, 16), c), np.full((16, 16), c + d)) == pytest.approx(expected, abs=1e-12)
    assert ssim(np.zeros((10, 30)), np.zeros((10, 30))) == -math.inf  # smaller than the window


def test_jpeg_uses_ijg_quality_scaling_on_one_component():
    rng = np.random.default_rng(5)
    img = np.clip(np.add.outer(np.arange(64), np.arange(64)) * 2 + rng.normal(0, 8, (64, 64)), 0, 255).astype(np.uint8)
    import io
    for quality, dc_step in ((10, 80), (20, 40)):  # IJG: scale 5000/q %, (16 * scale + 50) // 100
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as coded:
            assert coded.mode == "L" and len(coded.quantization) == 1
            assert coded.quantization[0][0] == dc_step
    q10, q20, q95 = (jpeg_roundtrip(img, q) for q in (10, 20, 95))
    assert q10.dtype == np.uint8 and q10.shape == img.shape
    assert psnr(img, q10) < psnr(img, q20) < psnr(img, q95)
    with pytest.raises(ValueError):
        jpeg_roundtrip(img, 0)
