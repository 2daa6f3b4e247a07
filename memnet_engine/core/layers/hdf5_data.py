"""HDF5Data: reads batches from the .h5 files listed in ``source`` (one dataset per top).

As in Caffe: files are read whole, one at a time, in list order (shuffled with
``shuffle``, which also permutes the rows within each file); batches wrap around.  Float,
double and integer datasets are read (integers with a warning; booleans, strings and others
are refused, as Caffe refuses their HDF5 classes), each file's size is checked against the memory
there is before it is read, and skipping (a resumed run's replay) reads row counts, not data.
Relative paths are tried from the working directory first (Caffe's rule) and then from
the folder of the net file (``source``) or of the list file (the .h5 names).
In data-parallel training (``shard``) rank r of K keeps the rows r, r + K, r + 2K, ... of that
stream, as Caffe 1.0's HDF5DataLayer::Skip does for its solvers.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import NetError
from ..fillers import rng
from ..layer import DataLayer, register
from ..memory import require, shape_bytes

HDF5_EXTENSIONS = (".h5", ".hdf5", ".he5", ".hdf")
log = logging.getLogger(__name__)


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
        names = self._read_list(source, p.source)
        self.list_path = source
        folder = os.path.dirname(os.path.abspath(source))
        self.files = [resolve(name, folder) for name in names]
        self.datasets = [self.param.top[i] for i in range(len(tops))]
        self.batch_size, self.shuffle = int(p.batch_size), p.shuffle
        self.file_order = np.arange(len(self.files))
        self._file_shapes: dict[str, list[tuple[int, ...]]] = {}
        self._converted: set[str] = set()  # integer datasets, warned about once
        # its own generator, seeded from the global one: the order depends on the seed, not on other layers' draws
        self.rng = np.random.default_rng(rng().integers(2**63))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self.shard_rank, self.shard_count = 0, 1
        self._enter(self.files[self.file_order[0]])
        self.reshape(bottoms, tops)

    def _read_list(self, source: str, given: str) -> list[str]:
        """The .h5 names of the list file (a regular file: not a pipe or a device such as /dev/zero)."""
        if not os.path.exists(source):
            raise NetError(f"layer '{self.name}': HDF5 source list '{given}' not found (looked in the working "
                           f"directory and next to the net): make one with memnet-make-data, or train with "
                           "memnet-train, which uses a built-in set when data/train_list.txt is missing")
        if not os.path.isfile(source):
            raise NetError(f"layer '{self.name}': HDF5 source list '{given}' is not a regular file")
        try:
            with open(source, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as ex:
            raise NetError(f"layer '{self.name}': cannot read HDF5 source list '{given}': {ex.strerror}") from None
        except UnicodeDecodeError:
            raise NetError(f"layer '{self.name}': HDF5 source list '{given}' is not a text file of .h5 names") \
                from None
        if not names:
            raise NetError(f"layer '{self.name}': HDF5 source list '{source}' names no files")
        return names

    def _describe(self, path: str) -> str:
        """``path`` for a message, unless the list line does not look like an HDF5 file name (a list that is
        really some other file would otherwise have its lines echoed)."""
        if path.lower().endswith(HDF5_EXTENSIONS):
            return repr(path)
        return f"(line {self.files.index(path) + 1} of {self.list_path}, not shown: not an .h5 name)"

    def _shapes(self, path: str) -> list[tuple[int, ...]]:
        """The shapes of the datasets in ``path``, read from its metadata once (no data is read)."""
        shapes = self._file_shapes.get(path)
        if shapes is None:
            shapes = self._file_shapes[path] = self._h5(path, self._read_shapes)
        return shapes

    def _h5(self, path: str, read):
        """``read(open h5py.File)``; a missing, non-regular or corrupt file is a NetError naming it."""
        import h5py

        shown = self._describe(path)
        if not os.path.isfile(path):
            what = "not found" if not os.path.exists(path) else "not a regular file"
            raise NetError(f"layer '{self.name}': HDF5 file {shown} {what}")
        try:
            with h5py.File(path, "r") as f:
                return read(f, shown)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as ex:  # h5py on a corrupt file
            raise NetError(f"layer '{self.name}': cannot read HDF5 file {shown}: {ex}") from None

    def _read_shapes(self, f, shown: str) -> list[tuple[int, ...]]:
        missing = [d for d in self.datasets if d not in f]
        if missing:
            raise NetError(f"layer '{self.name}': {shown} has no dataset(s) {missing} (it has {sorted(f.keys())})")
        shapes = []
        for name in self.datasets:
            dataset = f[name]
            if not hasattr(dataset, "dtype") or dataset.dtype.kind not in "fiu":
                kind = getattr(dataset, "dtype", "a group")
                raise NetError(f"layer '{self.name}': dataset '{name}' in {shown} is {kind}; HDF5Data reads float, "
                               "double or integer datasets (as Caffe)")
            if dataset.dtype.kind != "f" and name not in self._converted:
                self._converted.add(name)
                log.warning("layer '%s': dataset '%s' in %s holds %s values: read as %s (as Caffe does)", self.name,
                            name, shown, dataset.dtype, self.dtype)
            shapes.append(tuple(int(d) for d in dataset.shape))
        rows = {shape[0] if shape else 0 for shape in shapes}
        if len(rows) != 1 or 0 in rows:
            raise NetError(f"layer '{self.name}': datasets in {shown} must have the same, non-zero number of rows")
        need = sum(shape_bytes(shape, self.dtype.itemsize) for shape in shapes)
        require(need, f"layer '{self.name}': reading {shown}", error=NetError)
        return shapes

    def _enter(self, path: str) -> None:
        """Make ``path`` the current file: its row order is drawn now, its data read when first needed."""
        self.current_path, self.arrays = path, None
        self.rows = np.arange(self._shapes(path)[0][0])
        if self.shuffle:
            self.rng.shuffle(self.rows)
        self.current_row = 0

    def _current_arrays(self) -> list[np.ndarray]:
        if self.arrays is None:
            self.arrays = self._h5(self.current_path, lambda f, _: [np.asarray(f[d], dtype=self.dtype)
                                                                    for d in self.datasets])
        return self.arrays

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
            self._enter(self.files[self.file_order[self.current_file]])
        elif self.shuffle:
            self.rng.shuffle(self.rows)
        self.current_row = 0

    def reshape(self, bottoms, tops) -> None:
        for top, shape in zip(tops, self._shapes(self.current_path)):
            top.reshape((self.batch_size,) + shape[1:])

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
            picks.append((self._current_arrays(), self.rows[self.current_row]))
            self._next()
            self._skip_rows(self.shard_count - self.shard_rank - 1)
        return [np.stack([arrays[k][row] for arrays, row in picks]) for k in range(len(self.datasets))]

    def skip_batches(self, n: int) -> None:
        """Advance as ``n`` forward passes would (same rows, files and shuffles) without building batches."""
        self._skip_rows(int(n) * self.batch_size * self.shard_count)

    def _skip_rows(self, remaining: int) -> None:
        """Advance the row stream by ``remaining`` rows, drawing the shuffles reading would draw but reading no
        data (only the files' row counts); without shuffling whole passes over the files are skipped at once."""
        if not self.shuffle and remaining > 0:
            remaining %= sum(self._shapes(path)[0][0] for path in self.files)
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
