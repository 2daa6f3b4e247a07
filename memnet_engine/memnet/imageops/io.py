"""Reading and writing 8-bit images with Pillow, as MATLAB's ``imread``/``imwrite`` see them.

``read_image`` returns uint8 H x W (gray) or H x W x 3 (colour) arrays. Writes are atomic:
the image goes to a temporary file in the same folder that is then renamed.

Image sizes are checked before decoding: an image of more than ``pixel_limit()`` pixels
(``MAX_PIXELS``, 2**27 = 134,217,728, e.g. 11585 x 11585; the environment variable
``MEMNET_MAX_PIXELS`` changes it) is an ``ImageTooLarge`` error, as is one that Pillow itself
refuses as a decompression bomb (above twice ``PIL.Image.MAX_IMAGE_PIXELS``).
"""
from __future__ import annotations

import os
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...core.atomic import atomic_path
from ...core.errors import MemnetError

MAX_PIXELS = 2**27
PIXEL_LIMIT_VARIABLE = "MEMNET_MAX_PIXELS"
# what Pillow raises on a malformed file besides OSError (struct.error, EOFError: short reads in its parsers)
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, EOFError, SyntaxError, struct.error)


class ImageTooLarge(MemnetError):
    """An image (read or made) with more pixels than the limit."""


def pixel_limit() -> int:
    """The most pixels an image may have: ``MEMNET_MAX_PIXELS`` if set, else ``MAX_PIXELS``."""
    text = os.environ.get(PIXEL_LIMIT_VARIABLE)
    if text is None:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise MemnetError(f"{PIXEL_LIMIT_VARIABLE}={text!r} is not a number of pixels") from None
    if value < 1:
        raise MemnetError(f"{PIXEL_LIMIT_VARIABLE} must be positive, got {value}")
    return value


def check_pixels(width: int, height: int, what: str) -> None:
    """An ImageTooLarge error naming ``what`` unless a ``width`` x ``height`` image is within the limit."""
    limit = pixel_limit()
    if width * height > limit:
        raise ImageTooLarge(f"{what} is {width} x {height} = {width * height:,} pixels, more than the limit of "
                            f"{limit:,} (set {PIXEL_LIMIT_VARIABLE} to allow more)")

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
GRAY_MODES = ("L", "LA", "1")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def read_image(path: str) -> np.ndarray:
    """An 8-bit image as uint8: H x W for gray files, H x W x 3 for colour ones (alpha dropped); its size
    is checked against ``pixel_limit()`` before it is decoded."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise MemnetError(f"cannot read image '{path}': not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as image:
                check_pixels(*image.size, f"image '{path}'")
                if image.mode in GRAY_MODES:
                    return np.asarray(image.convert("L"), dtype=np.uint8).copy()
                if image.mode in COLOUR_MODES:
                    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
                raise MemnetError(f"{path}: unsupported image mode {image.mode} (need an 8-bit gray or colour image)")
    except Image.DecompressionBombError as ex:
        raise ImageTooLarge(f"image '{path}': {ex}") from None
    except DECODE_ERRORS as ex:
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
