"""A before/after picture of what a trained net does to a photo it has never seen.

``tools/train.py`` calls :func:`write_sr_preview` at the end of a run: the held-out scikit-image
photo (or any image) is degraded as the SR test protocol does (bicubic down and up by ``scale``
on the Y channel), restored with a deploy version of the training net that shares its weights,
and written as one PNG: bicubic | restored | original, each panel under a title that names it
and gives its PSNR on Y (shaved, as the SR protocol scores it); both PSNRs are also returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.default import PREVIEW_IMAGE, skimage_photo
from .data.degradations import to_double
from .imageops import imresize, modcrop, rgb2ycbcr, to_uint8, write_image, ycbcr2rgb
from .inference import restore
from ..core.net import TEST, Net
from ..core.net_param import deploy_from_train
from .scoring import protocol_scores

GAP = 8  # white pixels between the three panels
TITLE_SIZE = 18  # font size in pixels of the panel titles (smaller where a panel is too narrow)


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


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _fitting_font(titles: list[str], width: int) -> ImageFont.ImageFont:
    """The largest font up to TITLE_SIZE in which every title fits ``width`` pixels (at least 8 px)."""
    for size in range(TITLE_SIZE, 8, -1):
        font = _font(size)
        if all(font.getlength(title) <= width - 4 for title in titles):
            return font
    return _font(8)


def titled_panels(panels: list[np.ndarray], titles: list[str]) -> np.ndarray:
    """The panels side by side (GAP white pixels apart), each under its title, as one RGB image."""
    height, width = panels[0].shape[:2]
    font = _fitting_font(titles, width)
    top, bottom = font.getbbox("Ag")[1::2]
    strip = bottom - top + 10
    canvas = Image.new("RGB", (len(panels) * width + (len(panels) - 1) * GAP, strip + height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (panel, title) in enumerate(zip(panels, titles)):
        left = k * (width + GAP)
        canvas.paste(Image.fromarray(panel), (left, strip))
        draw.text((left + (width - font.getlength(title)) / 2, 5 - top), title, fill="black", font=font)
    return np.asarray(canvas)


def write_sr_preview(train_net: Net, path: str, scale: int = 3, image: "np.ndarray | None" = None,
                     name: str = "MemNet") -> Preview:
    """Restore ``image`` (default: the held-out photo) degraded by bicubic x``scale``; write the PNG
    (``name`` titles the restored panel)."""
    photo = skimage_photo(PREVIEW_IMAGE) if image is None else image
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    clean = to_double(rgb2ycbcr(modcrop(photo, scale)))
    bicubic = imresize(imresize(clean, 1 / scale), output_shape=clean.shape[:2])
    restored = bicubic.copy()
    restored[..., 0] = restore(deploy_twin(train_net), bicubic[..., 0])
    psnr_bicubic = protocol_scores("sr", scale, clean[..., 0], bicubic[..., 0])[0]
    psnr_restored = protocol_scores("sr", scale, clean[..., 0], restored[..., 0])[0]
    titles = [f"bicubic x{scale}: {psnr_bicubic:.2f} dB", f"{name}: {psnr_restored:.2f} dB",
              "original (PSNR on Y)"]
    write_image(path, titled_panels([_panel_rgb(x) for x in (bicubic, restored, clean)], titles))
    return Preview(path, psnr_bicubic, psnr_restored)
