"""A before/after picture of what a trained net does to a photo it has never seen.

``tools/train.py`` calls :func:`write_sr_preview` at the end of a run: the held-out scikit-image
photo (or any image) is degraded as the SR test protocol does (bicubic down and up by ``scale``
on the Y channel), restored with a deploy version of the training net that shares its weights,
and written as one PNG: bicubic | restored | original, with both PSNRs on Y (shaved) returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.default import PREVIEW_IMAGE, skimage_photo
from .data.degradations import to_double
from .imageops import imresize, modcrop, rgb2ycbcr, to_uint8, write_image, ycbcr2rgb
from .inference import restore
from ..core.net import TEST, Net
from ..core.net_param import deploy_from_train
from .scoring import protocol_scores

GAP = 8  # white pixels between the three panels


@dataclass
class Preview:
    path: str
    psnr_bicubic: float
    psnr_restored: float


def deploy_twin(train_net: Net, input_blob: str = "data") -> Net:
    """An inference net with the structure of ``train_net`` (TEST phase) and its very weight blobs."""
    channels = train_net.blobs[input_blob].shape[1]
    deploy = Net(deploy_from_train(train_net.source_param, {input_blob: (1, channels, 32, 32)}), phase=TEST,
                 device=train_net.device, dtype=train_net.dtype)
    deploy.share_weights_with(train_net)
    return deploy


def _panel_rgb(ycbcr: np.ndarray) -> np.ndarray:
    return ycbcr2rgb(to_uint8(ycbcr * 255))


def write_sr_preview(train_net: Net, path: str, scale: int = 3, image: "np.ndarray | None" = None) -> Preview:
    """Restore ``image`` (default: the held-out photo) degraded by bicubic x``scale``; write the PNG."""
    photo = skimage_photo(PREVIEW_IMAGE) if image is None else image
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    clean = to_double(rgb2ycbcr(modcrop(photo, scale)))
    bicubic = imresize(imresize(clean, 1 / scale), output_shape=clean.shape[:2])
    restored = bicubic.copy()
    restored[..., 0] = restore(deploy_twin(train_net), bicubic[..., 0])
    panels = [_panel_rgb(x) for x in (bicubic, restored, clean)]
    height, width = panels[0].shape[:2]
    canvas = np.full((height, 3 * width + 2 * GAP, 3), 255, np.uint8)
    for k, panel in enumerate(panels):
        canvas[:, k * (width + GAP): k * (width + GAP) + width] = panel
    write_image(path, canvas)
    return Preview(path, protocol_scores("sr", scale, clean[..., 0], bicubic[..., 0])[0],
                   protocol_scores("sr", scale, clean[..., 0], restored[..., 0])[0])
