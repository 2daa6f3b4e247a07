"""The end-of-training preview: a deploy twin sharing the training weights, and the before/after PNG."""
import numpy as np
from PIL import Image

import memnet_engine as me
from memnet_engine.memnet.inference import restore
from memnet_engine.memnet.preview import GAP, deploy_twin, write_sr_preview
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


def test_preview_png_has_three_panels_and_honest_scores(tmp_path):
    gradient = np.add.outer(np.arange(45), np.arange(60)).astype(np.uint8) * 2
    photo = np.stack([gradient, gradient[::-1], 255 - gradient], axis=-1)
    result = write_sr_preview(train_net(), str(tmp_path / "p.png"), scale=3, image=photo)
    with Image.open(result.path) as png:
        assert png.mode == "RGB" and png.size == (3 * 60 + 2 * GAP, 45)
        canvas = np.asarray(png)
    np.testing.assert_array_equal(canvas[:, 60:60 + GAP], 255)
    assert np.isfinite(result.psnr_bicubic) and result.psnr_bicubic > 20
    assert result.psnr_restored != result.psnr_bicubic
