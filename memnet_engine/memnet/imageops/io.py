"""Reading and writing 8-bit images with Pillow, as MATLAB's ``imread``/``imwrite`` see them.

``read_image`` returns uint8 H x W (gray) or H x W x 3 (colour) arrays. Writes are atomic:
the image goes to a temporary file in the same folder that is then renamed.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...core.atomic import atomic_path
from ...core.errors import MemnetError

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
GRAY_MODES = ("L", "LA", "1")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def read_image(path: str) -> np.ndarray:
    """An 8-bit image as uint8: H x W for gray files, H x W x 3 for colour ones (alpha dropped)."""
    try:
        with Image.open(path) as image:
            if image.mode in GRAY_MODES:
                return np.asarray(image.convert("L"), dtype=np.uint8).copy()
            if image.mode in COLOUR_MODES:
                return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
            raise MemnetError(f"{path}: unsupported image mode {image.mode} (need an 8-bit gray or colour image)")
    except (OSError, UnidentifiedImageError) as ex:
        raise MemnetError(f"cannot read image '{path}': {ex}") from None


def list_images(folder: str) -> list[str]:
    """The image files directly inside ``folder``, sorted by name (like MATLAB's ``dir``)."""
    if not os.path.isdir(folder):
        raise MemnetError(f"image folder '{folder}' does not exist")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise MemnetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'")
    return [os.path.join(folder, n) for n in names]


def write_image(path: str, image: np.ndarray) -> None:
    """Write a uint8 H x W or H x W x 3 image; the format follows the file extension."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"write_image: expected a uint8 H x W (x 3) image, got {image.dtype} {image.shape}")
    extension = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(extension)
    if fmt is None:
        raise MemnetError(f"cannot write '{path}': unknown image extension '{extension}'")
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format=fmt)
    except OSError as ex:
        raise MemnetError(f"cannot write image '{path}': {ex}") from None
