"""MATLAB's colour conversions: ``rgb2ycbcr``, ``ycbcr2rgb`` (ITU-R BT.601) and ``rgb2gray``.

Each follows MATLAB's code: one linear combination per output channel evaluated as
``k1*c1 + k2*c2 + k3*c3 + offset`` in double (``imlincomb``), then for uint8 rounded half
away from zero and saturated. uint8 in -> uint8 out (Y in 16..235, Cb/Cr in 16..240);
floating input is taken in [0, 1] and returned as float64 in [0, 1] (``ycbcr2rgb`` clips).
"""
from __future__ import annotations

import numpy as np

from .resize import to_uint8

# ycbcr (0..255) = YCBCR_MATRIX @ rgb (0..1) + YCBCR_OFFSET
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966],
                         [-37.797, -74.203, 112.0],
                         [112.0, -93.786, -18.214]])
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
# MATLAB's rgb2gray weights: the first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]).
GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _lincomb(image: np.ndarray, matrix: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``out[..., p] = sum_q matrix[p, q] * image[..., q] + offsets[p]``, summed left to right."""
    x = image.astype(np.float64)
    channels = []
    for row, offset in zip(matrix, offsets):
        acc = row[0] * x[..., 0]
        for q in range(1, len(row)):
            acc = acc + row[q] * x[..., q]
        channels.append(acc + offset)
    return np.stack(channels, axis=-1)


def _check_colour(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an H x W x 3 image, got shape {image.shape}")
    return image


def rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr``: uint8 -> uint8, floating [0, 1] -> float64 [0, 1]."""
    rgb = _check_colour(rgb, "rgb2ycbcr")
    matrix = (1 / 255) * YCBCR_MATRIX
    if rgb.dtype == np.uint8:
        return to_uint8(_lincomb(rgb, matrix, YCBCR_OFFSET))
    return _lincomb(rgb, matrix, (1 / 255) * YCBCR_OFFSET)


def ycbcr2rgb(ycbcr: np.ndarray) -> np.ndarray:
    """MATLAB ``ycbcr2rgb``: uint8 -> uint8, floating [0, 1] -> float64 clipped to [0, 1]."""
    ycbcr = _check_colour(ycbcr, "ycbcr2rgb")
    inverse = np.linalg.inv(YCBCR_MATRIX)
    matrix = 255 * inverse
    if ycbcr.dtype == np.uint8:
        return to_uint8(_lincomb(ycbcr, matrix, -(255 * inverse @ YCBCR_OFFSET)))
    return np.clip(_lincomb(ycbcr, matrix, -(inverse @ YCBCR_OFFSET)), 0.0, 1.0)


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray``: uint8 -> uint8, floating -> float64."""
    rgb = _check_colour(rgb, "rgb2gray")
    gray = _lincomb(rgb, GRAY_WEIGHTS[None, :], np.zeros(1))[..., 0]
    return to_uint8(gray) if rgb.dtype == np.uint8 else gray


def luminance(image: np.ndarray) -> np.ndarray:
    """The uint8 channel the MemNet/VDSR scripts work on: Y of ``rgb2ycbcr`` for colour, else the image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"luminance: expected a uint8 image, got {image.dtype}")
    return rgb2ycbcr(image)[..., 0] if image.ndim == 3 else image
