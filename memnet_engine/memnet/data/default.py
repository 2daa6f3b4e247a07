"""The embedded default training set: a small SR set built once from scikit-image's sample photos.

It lets ``tools/train.py`` start on a fresh machine without any dataset: the natural photos
that ship inside scikit-image's wheel (no download) are turned into a mixed x2/x3/x4 SR set
with the paper's 31 x 31 / stride-21 patches, without the 8-fold augmentation (about 12k
patches, some 90 MB). The set is cached under ``$MEMNET_CACHE`` (default
``~/.cache/memnet-engine``) and reused; an incomplete cache is rebuilt. For the paper's
291-image set use ``tools/make_training_data.py`` on T91 + BSD200_train instead.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from ...core.errors import MemnetError
from .builder import TrainingSetSpec, build_training_set

# Natural photographs inside skimage/data (stereo_motorcycle: its left view).  ``chelsea`` is held
# out: tools/train.py restores it after training as a preview the model has never seen.
DEFAULT_IMAGES = ("astronaut", "camera", "coffee", "rocket", "coins", "moon", "stereo_motorcycle")
PREVIEW_IMAGE = "chelsea"
CACHE_FOLDER = "default-sr-v2"
LIST_NAME = "train"
PATCHES_PER_FILE = 4096


def cache_root(cache_dir: "str | None" = None) -> str:
    """``cache_dir``, else ``$MEMNET_CACHE``, else ``~/.cache/memnet-engine``."""
    return cache_dir or os.environ.get("MEMNET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                         "memnet-engine")


def skimage_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as a uint8 array (gray or RGB)."""
    try:
        import skimage.data
    except ImportError:
        raise MemnetError("the default training set needs scikit-image (pip install scikit-image), "
                          "or give a training set made with tools/make_training_data.py") from None
    image = getattr(skimage.data, name)()
    return np.asarray(image[0] if isinstance(image, tuple) else image, dtype=np.uint8)


def default_images() -> Iterator[np.ndarray]:
    """The default photos as uint8 arrays (gray or RGB)."""
    for name in DEFAULT_IMAGES:
        yield skimage_photo(name)


def is_complete(list_path: str) -> bool:
    """True if the list file exists and every file it names holds matching ``data``/``label``."""
    import h5py

    try:
        with open(list_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            return False
        for name in names:
            with h5py.File(os.path.join(os.path.dirname(list_path), name), "r") as h5:
                if h5["data"].shape != h5["label"].shape or not h5["data"].shape[0]:
                    return False
    except (OSError, KeyError):
        return False
    return True


def ensure_default_training_set(cache_dir: "str | None" = None, *, progress: bool = True) -> str:
    """Path of the default set's list file (for ``hdf5_data_param.source``), building it on first use."""
    folder = os.path.join(cache_root(cache_dir), CACHE_FOLDER)
    list_path = os.path.join(folder, f"{LIST_NAME}.txt")
    if is_complete(list_path):
        return list_path
    try:
        build_training_set(default_images(), TrainingSetSpec("sr", augment=False), folder, count=len(DEFAULT_IMAGES),
                           prefix=LIST_NAME, patches_per_file=PATCHES_PER_FILE, shuffle_buffer=1 << 20,
                           progress=progress)
    except OSError as ex:
        raise MemnetError(f"cannot build the default training set in '{folder}': {ex}") from None
    return list_path
