"""HDF5Data: reads batches from the .h5 files listed in ``source`` (one dataset per top).

As in Caffe: files are read whole, one at a time, in list order (shuffled with
``shuffle``, which also permutes the rows within each file); batches wrap around.
Relative paths are tried from the working directory first (Caffe's rule) and then from
the folder of the net file (``source``) or of the list file (the .h5 names).
In data-parallel training (``shard``) rank r of K keeps the rows r, r + K, r + 2K, ... of that
stream, as Caffe 1.0's HDF5DataLayer::Skip does for its solvers.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import NetError
from ..fillers import rng
from ..layer import DataLayer, register


def resolve(path: str, *folders: str) -> str:
    """``path`` if it exists as given, else the first folder that holds it, else ``path``."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for folder in folders:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return candidate
    return path


@register("HDF5Data")
class HDF5DataLayer(DataLayer):
    min_tops = 1

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.hdf5_data_param
        if p.batch_size < 1:
            raise NetError(f"layer '{self.name}': hdf5_data_param.batch_size must be positive")
        source = resolve(p.source, self.net_dir)
        try:
            with open(source, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise NetError(f"layer '{self.name}': HDF5 source list '{p.source}' not found (looked in the working "
                           f"directory and next to the net): make one with memnet-make-data, or train with "
                           "memnet-train, which uses a built-in set when data/train_list.txt is missing") from None
        except OSError as ex:
            raise NetError(f"layer '{self.name}': cannot read HDF5 source list '{p.source}': {ex.strerror}") from None
        if not names:
            raise NetError(f"layer '{self.name}': HDF5 source list '{source}' names no files")
        folder = os.path.dirname(os.path.abspath(source))
        self.files = [resolve(name, folder) for name in names]
        self.batch_size, self.shuffle = int(p.batch_size), p.shuffle
        self.file_order = np.arange(len(self.files))
        # its own generator, seeded from the global one: the order depends on the seed, not on other layers' draws
        self.rng = np.random.default_rng(rng().integers(2**63))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self.shard_rank, self.shard_count = 0, 1
        self._load(self.files[self.file_order[0]], [self.param.top[i] for i in range(len(tops))])
        for top, array in zip(tops, self.arrays):
            top.reshape((self.batch_size,) + array.shape[1:])

    def _load(self, path: str, datasets: list[str]) -> None:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                missing = [d for d in datasets if d not in f]
                if missing:
                    raise NetError(f"layer '{self.name}': {path} has no dataset(s) {missing} "
                                   f"(it has {sorted(f.keys())})")
                self.arrays = [np.asarray(f[d], dtype=self.dtype) for d in datasets]
        except OSError as ex:
            raise NetError(f"layer '{self.name}': cannot read HDF5 file '{path}': {ex}") from None
        rows = {a.shape[0] if a.ndim else 0 for a in self.arrays}
        if len(rows) != 1 or 0 in rows:
            raise NetError(f"layer '{self.name}': datasets in {path} must have the same, non-zero number of rows")
        self.rows = np.arange(self.arrays[0].shape[0])
        if self.shuffle:
            self.rng.shuffle(self.rows)
        self.current_row = 0

    def _next(self) -> None:
        self.current_row += 1
        if self.current_row < len(self.rows):
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]], [self.param.top[i] for i in range(len(self.arrays))])
        elif self.shuffle:
            self.rng.shuffle(self.rows)
        self.current_row = 0

    def reshape(self, bottoms, tops) -> None:
        for top, array in zip(tops, self.arrays):
            top.reshape((self.batch_size,) + array.shape[1:])

    def shard(self, rank: int, count: int) -> None:
        """From now on keep only rows ``offset % count == rank`` of the row stream (data-parallel rank)."""
        if not 0 <= rank < count:
            raise ValueError(f"shard rank {rank} is not in 0..{count - 1}")
        self.shard_rank, self.shard_count = int(rank), int(count)

    def next_batch(self) -> list[np.ndarray]:
        """The next ``batch_size`` rows of every dataset (host arrays)."""
        picks = []
        for _ in range(self.batch_size):
            self._skip_rows(self.shard_rank)
            picks.append((self.arrays, self.rows[self.current_row]))
            self._next()
            self._skip_rows(self.shard_count - self.shard_rank - 1)
        return [np.stack([arrays[k][row] for arrays, row in picks]) for k in range(len(self.arrays))]

    def skip_batches(self, n: int) -> None:
        """Advance as ``n`` forward passes would (same rows, files and shuffles) without building batches."""
        self._skip_rows(int(n) * self.batch_size * self.shard_count)

    def _skip_rows(self, remaining: int) -> None:
        """Advance the row stream by ``remaining`` rows (loading and shuffling files as reading would)."""
        while remaining > 0:
            step = min(remaining, len(self.rows) - 1 - self.current_row)
            self.current_row += step
            remaining -= step
            if remaining:
                self._next()
                remaining -= 1

    def forward_cpu(self, bottoms, tops) -> None:
        for top, batch in zip(tops, self.next_batch()):
            top.data = self.xp.asarray(batch)

    forward_gpu = forward_cpu
