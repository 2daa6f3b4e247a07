"""``modcrop`` and ``shave`` as in the SRCNN/VDSR/MemNet MATLAB scripts."""
from __future__ import annotations

import numpy as np


def modcrop(image: np.ndarray, modulo: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``modulo``."""
    h, w = image.shape[:2]
    return image[:h - h % modulo, :w - w % modulo]


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side (``img(1+b:end-b, 1+b:end-b, :)``)."""
    if border <= 0:
        return image
    h, w = image.shape[:2]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"shave: a {h}x{w} image has nothing left after a {border}-pixel border")
    return image[border:h - border, border:w - border]
