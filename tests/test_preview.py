"""The end-of-training preview: a deploy twin sharing the training weights, and the before/after PNG."""
import numpy as np
from PIL import Image

import memnet_engine as me
from memnet_engine.memnet.inference import restore
from memnet_engine.memnet.preview import GAP, deploy_twin, titled_panels, write_sr_preview
from conftest import GOLDEN_FIXTURES


def train_net():
    return me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"), phase=me.TRAIN,
                  weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))


def test_deploy_twin_matches_the_released_deploy_net_and_shares_weights():
    net = train_net()
    twin = deploy_twin(net)
    reference = me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"), phase=me.TEST,
                       weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))
    image = np.random.default_rng(0).random((20, 17)).astype(np.float32)
    np.testing.assert_allclose(restore(twin, image), restore(reference, image), atol=1e-6)
    assert twin.params["conv1"][0] is net.params["conv1"][0]
    net.params["conv1"][0].data[...] *= 2  # training moves on: the twin sees it
    assert np.abs(restore(twin, image) - restore(reference, image)).max() > 1e-3


def test_preview_png_has_three_titled_panels_and_honest_scores(tmp_path):
    gradient = np.add.outer(np.arange(45), np.arange(60)).astype(np.uint8) * 2
    photo = np.stack([gradient, gradient[::-1], 255 - gradient], axis=-1)
    result = write_sr_preview(train_net(), str(tmp_path / "p.png"), scale=3, image=photo)
    with Image.open(result.path) as png:
        assert png.mode == "RGB" and png.size[0] == 3 * 60 + 2 * GAP and png.size[1] > 45
        canvas = np.asarray(png)
    strip = canvas.shape[0] - 45
    np.testing.assert_array_equal(canvas[strip:, 60:60 + GAP], 255)
    # the original (through YCbCr and back) under its title
    assert np.abs(canvas[strip:, -60:].astype(int) - photo).max() <= 2
    for k in range(3):  # each title is drawn in dark ink above its own panel
        assert canvas[:strip, k * (60 + GAP): k * (60 + GAP) + 60].min() < 100
    assert np.isfinite(result.psnr_bicubic) and result.psnr_bicubic > 20
    assert result.psnr_restored != result.psnr_bicubic


def test_titles_are_centred_over_their_panels_in_a_font_that_fits():
    panels = [np.full((50, 200, 3), 255, np.uint8) for _ in range(3)]
    canvas = titled_panels(panels, ["bicubic x3: 30.39 dB", "MemNet: 31.20 dB", "original (PSNR on Y)"])
    strip = canvas.shape[0] - 50
    assert 15 < strip < 40  # the default size (18 px) fits 200 px panels
    for k in range(3):
        ink = np.nonzero(canvas[:strip, k * (200 + GAP): k * (200 + GAP) + 200].min(axis=(0, 2)) < 128)[0]
        assert len(ink) and abs((ink[0] + ink[-1]) / 2 - 100) < 6 and ink[0] > 5
    narrow = titled_panels([p[:, :40] for p in panels], ["a long title that cannot fit"] * 3)
    assert narrow.shape[0] - 50 < strip  # a smaller font where the panels are narrow
