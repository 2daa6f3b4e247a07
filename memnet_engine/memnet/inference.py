"""Restoring images with a deploy net, tile by tile so that memory stays bounded.

The split is the one of MemNet's test scripts (``test_MemNet_M6R6_*.m``): an axis of length
``n`` is cut into ``ceil(n / (tile + overlap))`` equal cores; each core is run with up to
``overlap`` extra pixels of context on every side (fewer at the image border) and only the
core of the output is kept. With ``overlap`` at least the net's receptive-field radius the
result equals one pass over the whole image. Intermediate blobs are freed during each
forward pass (``keep_intermediates=False``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..core.backend import to_numpy
from .data.degradations import to_double
from ..core.errors import NetError
from .imageops import imresize, rgb2ycbcr, to_uint8, ycbcr2rgb

if TYPE_CHECKING:
    from ..core.net import Net

DEFAULT_TILE = 150
DEFAULT_OVERLAP = 16
TileCallback = Callable[[int, int], None]  # (tiles done, tiles in the image): before the first tile, after each


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, context_start, context_end) along one axis; ``tile <= 0`` means one piece."""
    pieces = 1 if tile <= 0 else math.ceil(length / (tile + overlap))
    stride = math.ceil(length / pieces)
    spans = []
    for start in range(0, length, stride):
        end = min(start + stride, length)
        spans.append((start, end, max(0, start - overlap), min(length, end + overlap)))
    return spans


def net_endpoints(net: "Net") -> tuple[str, str]:
    """The (input, output) blob names of a single-input, single-output deploy net."""
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise NetError(f"net '{net.name}' must have one input and one output for restoration "
                       f"(inputs {net.inputs}, outputs {net.outputs})")
    return net.inputs[0], net.outputs[0]


def run_net(net: "Net", image: np.ndarray) -> np.ndarray:
    """One forward pass of a 2-D image through the net; the 2-D float32 result on the host."""
    name_in, name_out = net_endpoints(net)
    net.blobs[name_in].reshape((1, 1) + image.shape)
    net.reshape()
    out = net.forward(keep_intermediates=False, **{name_in: image[None, None]})[name_out]
    result = to_numpy(out)
    if result.shape[-2:] != image.shape:
        raise NetError(f"net '{net.name}' turned a {image.shape} input into {result.shape}; "
                       "restoration needs a same-size output")
    return result.reshape(image.shape).astype(np.float32, copy=False)


def restore(net: "Net", image: np.ndarray, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
            on_tile: "TileCallback | None" = None) -> np.ndarray:
    """Restore a 2-D float image (on the [0, 1] scale) with a deploy net, tile by tile."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"restore: expected a 2-D image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    rows, cols = tile_spans(image.shape[0], tile, overlap), tile_spans(image.shape[1], tile, overlap)
    if on_tile is not None:
        on_tile(0, len(rows) * len(cols))
    for i, (r0, r1, cr0, cr1) in enumerate(rows):
        for j, (c0, c1, cc0, cc1) in enumerate(cols):
            piece = run_net(net, np.ascontiguousarray(image[cr0:cr1, cc0:cc1]))
            out[r0:r1, c0:c1] = piece[r0 - cr0:r1 - cr0, c0 - cc0:c1 - cc0]
            if on_tile is not None:
                on_tile(i * len(cols) + j + 1, len(rows) * len(cols))
    return out


def restore_image(net: "Net", image: np.ndarray, task: str, scale: int = 1, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, on_tile: "TileCallback | None" = None) -> np.ndarray:
    """Restore a uint8 gray or RGB image; returns uint8 of the same kind.

    The net runs on Y (gray images: on the image); Cb/Cr are kept, or bicubic-upscaled for SR.
    For SR the input is first bicubic-upscaled by ``scale`` (MemNet works at the output size).
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"restore_image: expected a uint8 gray or RGB image, got {image.dtype} {image.shape}")
    channels = to_double(rgb2ycbcr(image) if image.ndim == 3 else image[..., None])
    if task == "sr":
        channels = imresize(channels, scale)
    y = restore(net, channels[..., 0], tile, overlap, on_tile)
    planes = [to_uint8(y * np.float32(255))]
    planes += [to_uint8(np.float32(c) * np.float32(255)) for c in np.moveaxis(channels[..., 1:], -1, 0)]
    return ycbcr2rgb(np.stack(planes, axis=-1)) if image.ndim == 3 else planes[0]
