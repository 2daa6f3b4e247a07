"""Building a training set the way the paper does (DRRN's ``generate_trainingset_x234.m``).

For every image: take the task's channel (Y, or gray for denoising), make the 8 rotated and
flipped versions, corrupt each at every level of the task (one set mixes all levels), cut
31 x 31 patches at stride 21 from input and label alike, and stream them through a shuffle
buffer into HDF5 files plus a list file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from .degradations import PAPER_LEVELS, TASKS, check_level, degrade, task_channel
from .patches import augmentations, extract_patches
from .writer import PatchWriter

PATCH_SIZE = 31
STRIDE = 21


@dataclass
class TrainingSetSpec:
    """What to build: the task, its corruption levels and the patch grid."""

    task: str
    levels: Sequence[float] = ()
    patch_size: int = PATCH_SIZE
    stride: int = STRIDE
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: use one of {TASKS}")
        self.levels = tuple(check_level(self.task, level) for level in self.levels) or PAPER_LEVELS[self.task]
        if self.patch_size < 1 or self.stride < 1:
            raise ValueError("patch size and stride must be positive")


def image_patches(image: np.ndarray, spec: TrainingSetSpec,
                  noise_rng: np.random.Generator) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(data, label) patch arrays of one image, one pair per (version, level)."""
    clean = task_channel(image, spec.task)
    versions = augmentations(clean) if spec.augment else (clean,)
    for version in versions:
        for level in spec.levels:
            degraded, label = degrade(version, spec.task, level, noise_rng)
            yield (extract_patches(degraded, spec.patch_size, spec.stride),
                   extract_patches(label, spec.patch_size, spec.stride))


def build_training_set(images: Iterable[np.ndarray], spec: TrainingSetSpec, out_dir: str, *,
                       count: "int | None" = None, prefix: str = "train", patches_per_file: int = 16384,
                       shuffle_buffer: int = 65536, progress: bool = True) -> PatchWriter:
    """Write the training set of ``images`` (uint8 arrays) to ``out_dir``; returns the closed writer.

    ``writer.list_path`` is the list file for ``hdf5_data_param.source``; ``writer.total`` the patch count.
    """
    noise_seed, shuffle_seed = np.random.SeedSequence(spec.seed).spawn(2)
    noise_rng = np.random.default_rng(noise_seed)
    writer = PatchWriter(out_dir, prefix, patches_per_file, shuffle_buffer, np.random.default_rng(shuffle_seed))
    for image in tqdm(images, total=count, desc=f"{spec.task} patches", unit="img", disable=not progress):
        for data, label in image_patches(image, spec, noise_rng):
            writer.add(data, label)
    writer.close()
    return writer
