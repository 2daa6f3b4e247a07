"""Streaming HDF5 output for Caffe's HDF5Data layer, with bounded memory.

Patches are collected in a shuffle buffer; whenever it holds ``shuffle_buffer`` patches, a
random ``patches_per_file`` of them are written as one file ``<prefix>_NNNN.h5`` with
datasets ``data`` and ``label`` (float32, N x 1 x H x W). ``close()`` writes what is left
and then the list file ``<prefix>.txt`` naming the files relative to its own folder. Every
file is written under a temporary name and renamed, so the list file only ever names
complete files and its presence marks a complete set.
"""
from __future__ import annotations

import os

import numpy as np

from ...core.atomic import atomic_path


class PatchWriter:
    """Shuffles (data, label) patch pairs through a bounded buffer into HDF5 files plus a list file."""

    def __init__(self, out_dir: str, prefix: str = "train", patches_per_file: int = 16384,
                 shuffle_buffer: int = 65536, rng: "np.random.Generator | None" = None):
        if patches_per_file < 1 or shuffle_buffer < patches_per_file:
            raise ValueError("need 1 <= patches_per_file <= shuffle_buffer")
        self.out_dir, self.prefix = out_dir, prefix
        self.patches_per_file, self.shuffle_buffer = patches_per_file, shuffle_buffer
        self.rng = rng if rng is not None else np.random.default_rng()
        self.files: list[str] = []
        self.total = 0
        self._data: list[np.ndarray] = []
        self._label: list[np.ndarray] = []
        self._buffered = 0
        os.makedirs(out_dir, exist_ok=True)

    @property
    def list_path(self) -> str:
        return os.path.join(self.out_dir, f"{self.prefix}.txt")

    def add(self, data: np.ndarray, label: np.ndarray) -> None:
        """Queue N patches (N x H x W each); files are written as the buffer fills."""
        if data.shape != label.shape or data.ndim != 3:
            raise ValueError(f"data {data.shape} and label {label.shape} must be the same N x H x W shape")
        if not len(data):
            return
        self._data.append(data.astype(np.float32)[:, None])
        self._label.append(label.astype(np.float32)[:, None])
        self._buffered += len(data)
        while self._buffered >= self.shuffle_buffer:
            self._write_some(self.patches_per_file)

    def close(self) -> str:
        """Write the remaining patches and the list file; return the list file's path."""
        while self._buffered:
            self._write_some(min(self.patches_per_file, self._buffered))
        if not self.files:
            raise ValueError("no patches were produced (are the images smaller than one patch?)")
        with atomic_path(self.list_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(name + "\n" for name in self.files)
        return self.list_path

    def _write_some(self, count: int) -> None:
        data = np.concatenate(self._data)
        self._data.clear()  # free the pieces before copying again: peak memory stays ~2x the buffer
        label = np.concatenate(self._label)
        self._label.clear()
        order = self.rng.permutation(len(data))
        take, keep = order[:count], order[count:]
        self._save(data[take], label[take])
        self._data, self._label = [data[keep]], [label[keep]]
        self._buffered = len(keep)

    def _save(self, data: np.ndarray, label: np.ndarray) -> None:
        import h5py

        name = f"{self.prefix}_{len(self.files):04d}.h5"
        with atomic_path(os.path.join(self.out_dir, name)) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("data", data=data)
                f.create_dataset("label", data=label)
        self.files.append(name)
        self.total += len(data)
