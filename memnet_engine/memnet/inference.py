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
from .imageops import rgb2ycbcr, to_uint8, ycbcr2rgb
from .imageops.io import check_pixels
from .imageops.resize import resize_plan

if TYPE_CHECKING:
    from ..core.net import Net

DEFAULT_TILE = 150
DEFAULT_OVERLAP = 16
TileCallback = Callable[[int, int], None]  # (tiles done, tiles in the image): before the first tile, after each
Region = Callable[["tuple[int, int]", "tuple[int, int]"], np.ndarray]  # (rows, cols) -> that part of an image
Store = Callable[["tuple[int, int]", "tuple[int, int]", np.ndarray], None]  # (rows, cols, restored piece)


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


def restore_tiles(net: "Net", shape: tuple[int, int], source: Region, store: Store, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, on_tile: "TileCallback | None" = None) -> None:
    """Restore an image of ``shape`` tile by tile: ``source(rows, cols)`` gives a tile with its context (a 2-D
    float image on the [0, 1] scale), ``store(rows, cols, piece)`` takes the restored core of each tile."""
    rows, cols = tile_spans(shape[0], tile, overlap), tile_spans(shape[1], tile, overlap)
    if on_tile is not None:
        on_tile(0, len(rows) * len(cols))
    for i, (r0, r1, cr0, cr1) in enumerate(rows):
        for j, (c0, c1, cc0, cc1) in enumerate(cols):
            piece = run_net(net, np.ascontiguousarray(source((cr0, cr1), (cc0, cc1)), dtype=np.float32))
            store((r0, r1), (c0, c1), piece[r0 - cr0:r1 - cr0, c0 - cc0:c1 - cc0])
            if on_tile is not None:
                on_tile(i * len(cols) + j + 1, len(rows) * len(cols))


def restore(net: "Net", image: np.ndarray, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
            on_tile: "TileCallback | None" = None) -> np.ndarray:
    """Restore a 2-D float image (on the [0, 1] scale) with a deploy net, tile by tile."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"restore: expected a 2-D image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)

    def store(rows, cols, piece):
        out[slice(*rows), slice(*cols)] = piece

    restore_tiles(net, image.shape, lambda rows, cols: image[slice(*rows), slice(*cols)], store, tile, overlap,
                  on_tile)
    return out


class ChannelSource:
    """The YCbCr (or gray) planes of a uint8 image as doubles on the [0, 1] scale, bicubic-upscaled by
    ``scale`` for SR, computed region by region from the input pixels that region needs: nothing of the
    (upscaled) image's size is held in floating point."""

    def __init__(self, image: np.ndarray, scale: int = 1):
        self.image, self.colour = image, image.ndim == 3
        self.plan = resize_plan(image.shape, scale) if scale != 1 else None
        self.shape = self.plan.out_shape if self.plan else image.shape[:2]

    def region(self, rows: tuple[int, int], cols: tuple[int, int], planes: slice = slice(None)) -> np.ndarray:
        """``planes`` (Y: ``slice(0, 1)``) of rows x cols (output coordinates), H x W x planes."""
        window = self.plan.window(rows, cols) if self.plan else (slice(*rows), slice(*cols))
        crop = self.image[window]
        values = to_double(rgb2ycbcr(crop) if self.colour else crop[..., None])[..., planes]
        return self.plan.apply(values, rows, cols) if self.plan else values


def restore_image(net: "Net", image: np.ndarray, task: str, scale: int = 1, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, on_tile: "TileCallback | None" = None) -> np.ndarray:
    """Restore a uint8 gray or RGB image; returns uint8 of the same kind.

    The net runs on Y (gray images: on the image); Cb/Cr are kept, or bicubic-upscaled for SR.
    For SR the input is first bicubic-upscaled by ``scale`` (MemNet works at the output size).
    Everything is computed tile by tile (or band by band): memory is the uint8 result and the tiles.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"restore_image: expected a uint8 gray or RGB image, got {image.dtype} {image.shape}")
    source = ChannelSource(image, scale if task == "sr" else 1)
    check_pixels(source.shape[1], source.shape[0], f"the restored image (x{scale} of {image.shape[1]} x "
                                                   f"{image.shape[0]})" if task == "sr" else "the restored image")
    out = np.empty(source.shape + (3 if source.colour else 1,), np.uint8)

    def store_y(rows, cols, piece):
        out[slice(*rows), slice(*cols), 0] = to_uint8(piece * np.float32(255))

    restore_tiles(net, source.shape, lambda rows, cols: source.region(rows, cols, slice(0, 1))[..., 0], store_y, tile,
                  overlap, on_tile)
    if not source.colour:
        return out[..., 0]
    for r0, r1, _, _ in tile_spans(source.shape[0], tile, 0):
        band = (r0, r1), (0, source.shape[1])
        out[r0:r1, :, 1:] = to_uint8(np.float32(source.region(*band, slice(1, 3))) * np.float32(255))
        out[r0:r1] = ycbcr2rgb(out[r0:r1])
    return out
