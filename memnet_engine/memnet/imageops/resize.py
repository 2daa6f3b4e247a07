"""MATLAB's ``imresize(A, scale | [rows cols], 'bicubic')``, antialiased, reproduced exactly.

The steps follow MATLAB's imresize.m:

- kernel: Keys' cubic with a = -0.5; when shrinking (scale < 1) it is stretched to
  ``h(x) = scale * cubic(scale * x)`` and its width becomes ``4 / scale`` (antialiasing);
- output pixel ``x`` (1-based) reads input coordinate ``u = x / scale + 0.5 * (1 - 1 / scale)``
  from ``P = ceil(width) + 2`` neighbours starting at ``floor(u - width / 2)``; weights are
  normalised to sum to one, out-of-range indices are mirrored (``[1..n, n..1]`` repeated),
  all-zero weight columns are dropped;
- output size ``ceil(scale * size)``; with an output size, ``scale = out / in`` per axis;
- the axis with the smaller scale is resized first (rows first on ties);
- uint8 images are computed in double and rounded (half away from zero) and saturated to
  uint8 after each axis, as ``imresizemex`` returns the input class; double stays double.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices (each ``out_length x K``) of MATLAB's ``contributions``."""
    width = KERNEL_WIDTH
    if scale < 1 and antialiasing:
        def kernel(x):
            return scale * cubic(scale * x)
        width = KERNEL_WIDTH / scale
    else:
        kernel = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's ``round``: halves go away from zero (NumPy's ``round`` goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's ``uint8(x)`` for a floating array: round half away from zero, saturate."""
    return np.clip(round_half_away(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8)


def resize_axis(image: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Resample one axis: ``out[i] = sum_k weights[i, k] * image[indices[i, k]]``."""
    moved = np.moveaxis(image, axis, 0)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=np.float64)
    extra = (slice(None),) + (None,) * (moved.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k][extra] * moved[indices[:, k]]
    return np.moveaxis(out, 0, axis)


@dataclass
class ResizePlan:
    """MATLAB's imresize of an image of one size, computable region by region: ``window(rows, cols)`` is the
    part of the input a region of the output reads, ``apply`` resizes that part (the same arithmetic per
    output pixel as resizing the whole image, so a region equals the same crop of the whole result)."""

    out_shape: tuple[int, int]
    order: tuple[int, int]                               # the axis resized first, then the other
    axes: "tuple[tuple[np.ndarray, np.ndarray], ...]"    # (weights, 0-based input indices) per axis

    def window(self, rows: "tuple[int, int]", cols: "tuple[int, int]") -> tuple[slice, slice]:
        spans = []
        for (weights, indices), (start, end) in zip(self.axes, (rows, cols)):
            used = indices[start:end]
            spans.append(slice(int(used.min()), int(used.max()) + 1))
        return spans[0], spans[1]

    def apply(self, crop: np.ndarray, rows: "tuple[int, int]", cols: "tuple[int, int]") -> np.ndarray:
        """The output region ``rows`` x ``cols`` from ``crop`` = the input's ``window(rows, cols)``."""
        window = self.window(rows, cols)
        is_uint8 = crop.dtype == np.uint8
        result = crop.astype(np.float64)
        for axis in self.order:
            weights, indices = self.axes[axis]
            start, end = (rows, cols)[axis]
            result = resize_axis(result, axis, weights[start:end], indices[start:end] - window[axis].start)
            if is_uint8:
                result = to_uint8(result).astype(np.float64)
        return result.astype(np.uint8) if is_uint8 else result


def resize_plan(in_shape: Sequence[int], scale: "float | None" = None, output_shape: "Sequence[int] | None" = None,
                antialiasing: bool = True) -> ResizePlan:
    """The ResizePlan of ``imresize`` for an input of ``in_shape`` (rows, cols)."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale or output_shape")
    in_shape = tuple(int(n) for n in in_shape[:2])
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(scale * n)) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if len(out_shape) != 2 or min(out_shape) < 1:
            raise ValueError(f"imresize: output_shape must be two positive sizes, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    axes = tuple(contributions(in_shape[axis], out_shape[axis], scales[axis], antialiasing) for axis in (0, 1))
    return ResizePlan(out_shape, order, axes)


def imresize(image: np.ndarray, scale: "float | None" = None,
             output_shape: "Sequence[int] | None" = None, antialiasing: bool = True) -> np.ndarray:
    """Bicubic resize of a 2-D or H x W x C image exactly as MATLAB's ``imresize``.

    Give either ``scale`` (one factor for both axes) or ``output_shape`` = (rows, cols).
    uint8 in -> uint8 out; any other input is computed and returned as float64.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize: expected a 2-D or H x W x C image, got shape {image.shape}")
    plan = resize_plan(image.shape, scale, output_shape, antialiasing)
    rows, cols = (0, plan.out_shape[0]), (0, plan.out_shape[1])
    return plan.apply(image[plan.window(rows, cols)], rows, cols)
