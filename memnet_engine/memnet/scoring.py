"""PSNR/SSIM exactly as the MemNet test scripts score a restored image (test_MemNet_M6R6_*.m)."""
from __future__ import annotations

import numpy as np

from .imageops import psnr, shave, ssim, to_uint8


def protocol_scores(task: str, level: float, clean: np.ndarray, result: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of ``result`` against ``clean`` (both 2-D on [0, 1]).

    SR: both rounded to uint8 (``uint8(single(y) * 255)``) and ``level`` (the scale) pixels shaved
    off each side; denoise/JPEG: ``single(y) * 255`` without rounding or shaving.
    """
    if task == "sr":
        border = int(level)
        clean, result = (shave(to_uint8(np.float32(x) * np.float32(255)), border) for x in (clean, result))
    else:
        clean, result = (np.float32(x) * np.float32(255) for x in (clean, result))
    return psnr(clean, result), ssim(clean, result)
