"""The paper's corruptions of a clean uint8 image, as in the MemNet/DRRN MATLAB scripts.

Every function returns ``(degraded, clean)`` as float64 arrays on the [0, 1] scale
(``im2double``); the network learns ``degraded -> clean``.

- SR: ``modcrop`` to a multiple of the scale, then bicubic down by 1/scale and back up to the
  cropped size with MATLAB's ``imresize`` on the double image;
- denoise: ``clean + sigma/255 * randn`` (sigma on the 0..255 scale), not clipped, as
  ``test_MemNet_M6R6_GD.m`` does;
- JPEG: the uint8 image coded at a quality factor and decoded (``imwrite``/``imread``).
"""
from __future__ import annotations

import numpy as np

from ..imageops import imresize, jpeg_roundtrip, luminance, modcrop, rgb2gray

TASKS = ("sr", "denoise", "jpeg")
# The corruption levels the paper mixes into one training set per task.
PAPER_LEVELS = {"sr": (2, 3, 4), "denoise": (30, 50, 70), "jpeg": (10, 20)}
LEVEL_NAMES = {"sr": "scale", "denoise": "sigma", "jpeg": "quality"}


def task_channel(image: np.ndarray, task: str) -> np.ndarray:
    """The uint8 channel a task works on: gray (``rgb2gray``) for denoising, else Y (``rgb2ycbcr``).

    Single-channel images are used as they are, as the MATLAB scripts do.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
    if task == "denoise" and image.ndim == 3:
        return rgb2gray(image)
    return luminance(image)


def check_level(task: str, level: float) -> float:
    """``level`` if it is valid for ``task`` (SR scale: an integer >= 2, sigma >= 0, quality 1..100), else ValueError."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
    whole = float(level) == int(level)
    if task == "sr" and not (whole and level >= 2):
        raise ValueError(f"SR scale must be an integer >= 2, got {level:g}")
    if task == "jpeg" and not (whole and 1 <= level <= 100):
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {level:g}")
    if task == "denoise" and not level >= 0:
        raise ValueError(f"noise sigma must be >= 0, got {level:g}")
    return level


def to_double(image: np.ndarray) -> np.ndarray:
    """MATLAB's ``im2double`` for uint8."""
    return image.astype(np.float64) / 255


def bicubic_pair(clean: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(bicubic down-up, modcropped clean) for SR at integer ``scale``."""
    label = modcrop(to_double(clean), scale)
    if min(label.shape) < scale:
        raise ValueError(f"a {clean.shape[0]}x{clean.shape[1]} image is too small for scale {scale}")
    return imresize(imresize(label, 1 / scale), output_shape=label.shape), label


def noisy_pair(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(clean + Gaussian noise of std ``sigma``/255, clean)."""
    label = to_double(clean)
    return label + (sigma / 255) * rng.standard_normal(label.shape), label


def jpeg_pair(clean: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(JPEG-coded at ``quality``, clean)."""
    return to_double(jpeg_roundtrip(clean, quality)), to_double(clean)


def degrade(clean: np.ndarray, task: str, level: float,
            rng: "np.random.Generator | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) for a 2-D uint8 image; ``level`` is the scale, sigma or quality."""
    if task == "sr":
        return bicubic_pair(clean, int(level))
    if task == "denoise":
        if rng is None:
            raise ValueError("denoising needs a random generator (rng)")
        return noisy_pair(clean, float(level), rng)
    if task == "jpeg":
        return jpeg_pair(clean, int(level))
    raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
