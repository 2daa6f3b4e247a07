"""JPEG compression at a quality factor, as ``imwrite(I, f, 'jpg', 'Quality', q); imread(f)``.

Pillow's libjpeg and MATLAB's IJG libjpeg scale the standard quantisation tables by the
quality factor the same way (``jpeg_set_quality``); a single-channel uint8 image is coded
as a one-component (grayscale) JPEG, so there is no chroma subsampling involved.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_roundtrip(gray: np.ndarray, quality: int) -> np.ndarray:
    """Encode a 2-D uint8 image as JPEG at ``quality`` (1..100) and decode it again."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"jpeg_roundtrip: expected a 2-D uint8 image, got {gray.dtype} {gray.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg_roundtrip: quality must be in 1..100, got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L"), dtype=np.uint8).copy()
