"""Patch extraction and DRRN-style augmentation for training sets.

``extract_patches`` follows ``generate_trainingset_x234.m`` of DRRN/MemNet: a window of
``size`` x ``size`` at every ``stride``-th row and column (rows in the outer loop) that fits
inside the image, the same window cut from the input and the label.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

AUGMENTATIONS = 8


def augmentations(image: np.ndarray) -> Iterator[np.ndarray]:
    """The 8 versions DRRN trains on: rotations by 0/90/180/270 degrees, unflipped then flipped."""
    for base in (image, np.fliplr(image)):
        for k in range(4):
            yield np.ascontiguousarray(np.rot90(base, k))


def patch_positions(length: int, size: int, stride: int) -> range:
    """0-based starts of the windows along one axis (MATLAB: ``1 : stride : length - size + 1``)."""
    return range(0, length - size + 1, stride)


def patch_count(shape: tuple[int, int], size: int, stride: int) -> int:
    """How many patches ``extract_patches`` cuts from an image of ``shape``."""
    return len(patch_positions(shape[0], size, stride)) * len(patch_positions(shape[1], size, stride))


def extract_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All ``size`` x ``size`` windows at ``stride`` of a 2-D image, as an (N, size, size) array."""
    if image.shape[0] < size or image.shape[1] < size:
        return np.empty((0, size, size), dtype=image.dtype)
    windows = sliding_window_view(image, (size, size))[::stride, ::stride]
    return windows.reshape(-1, size, size)
