"""Blob: an N-d array of data and its gradient (``diff``), as in Caffe."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .backend import CPU, array_module, host_assignable, to_numpy
from .errors import ReleasedBlobError

# Stands for an array the net freed (memory plan): reading it raises instead of giving zeros.
RELEASED = object()


class Blob:
    """Holds ``data`` and ``diff`` of one shape on one device.

    ``diff`` is allocated (zeros) the first time it is used, so nets that never run
    backward keep only their data.  ``data`` / ``diff`` are writable arrays (NumPy on
    the CPU, CuPy on the GPU, where ``blob.data[...] = numpy_array`` copies to the device as
    in pycaffe); ``host_data()`` / ``host_diff()`` give NumPy copies.  A learnable parameter's
    arrays are views of its net's flat buffers (``bind``): assigning ``blob.data = x`` then
    copies into the view.

    A net running its memory plan *releases* arrays nobody will read again; reading a released
    array raises ``ReleasedBlobError`` naming the blob, until a layer writes it again (``renew``).
    """

    def __init__(self, shape: Iterable[int] = (), dtype=np.float32, device: str = CPU, name: str = ""):
        self.name = name
        self.device = device
        self.xp = array_module(device)
        self.dtype = np.dtype(dtype)
        self._shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self._data = None
        self._diff = None
        self._diff_view: "Callable[[], object] | None" = None  # set by bind()

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    @property
    def num(self) -> int:
        """Size of the first axis (Caffe's legacy ``num``)."""
        return self._shape[0] if self._shape else 1

    def canonical_axis(self, axis: int) -> int:
        """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise ValueError(f"axis {axis} out of range for a {n}-axis blob {self._shape}")
        return axis + n if axis < 0 else axis

    def count_range(self, start: int, end: int | None = None) -> int:
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def reshape(self, shape: Iterable[int]) -> None:
        """Set a new shape.  Same count: arrays are re-viewed; else they are reallocated."""
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"negative blob dimension in {shape}")
        if shape == self._shape:
            return
        same_count = int(np.prod(shape, dtype=np.int64)) == self.count
        if self.bound and not same_count:
            raise ValueError(f"a learnable parameter of shape {self._shape} cannot be reshaped to {shape}")
        self._shape = shape
        self._data = self._reshaped(self._data, shape, same_count)
        self._diff = self._reshaped(self._diff, shape, same_count)

    @staticmethod
    def _reshaped(array, shape, same_count: bool):
        if array is None or array is RELEASED:
            return array
        return array.reshape(shape) if same_count else None

    def reshape_like(self, other: "Blob") -> None:
        self.reshape(other.shape)

    # ------------------------------------------------------------------ arrays
    @property
    def data(self):
        if self._data is None:
            self._data = self.xp.zeros(self._shape, self.dtype)
        elif self._data is RELEASED:
            raise self._released_error("data")
        return self._handed_out(self._data)

    @data.setter
    def data(self, value) -> None:
        if self.bound:
            self._data[...] = self._checked(value, "data")
        else:
            self._data = self._checked(value, "data")

    @property
    def diff(self):
        if self._diff is None:
            self._diff = self.xp.zeros(self._shape, self.dtype) if self._diff_view is None else \
                self._diff_view().reshape(self._shape)
        elif self._diff is RELEASED:
            raise self._released_error("diff")
        return self._handed_out(self._diff)

    @diff.setter
    def diff(self, value) -> None:
        if self.bound:
            self.diff[...] = self._checked(value, "diff")
        else:
            self._diff = self._checked(value, "diff")

    def bind(self, data, diff_view: "Callable[[], object]") -> None:
        """Make views of a net's flat buffers this blob's arrays for good: ``data`` now, ``diff_view()``
        when the diff is first used; assignments then copy into them."""
        self._data = data.reshape(self._shape)
        self._diff = None
        self._diff_view = diff_view

    @property
    def bound(self) -> bool:
        """True when the arrays are views of a net's flat parameter buffers (see ``bind``)."""
        return self._diff_view is not None

    def _handed_out(self, array):
        return array if self.xp is np else array.view(host_assignable(self.xp))

    def _checked(self, value, what: str):
        if tuple(value.shape) != self._shape:
            raise ValueError(f"cannot set {what} of shape {tuple(value.shape)} on a blob of shape {self._shape}")
        value = self.xp.asarray(value)  # a host array given to a GPU blob is copied to the device
        if value.dtype != self.dtype:
            value = value.astype(self.dtype)
        return value

    def _released_error(self, what: str) -> ReleasedBlobError:
        name = f"blob '{self.name}'" if self.name else "this blob"
        return ReleasedBlobError(
            f"the {what} of {name} was freed after its last use (a net keeps only what its memory plan needs "
            "when run with keep_intermediates=False or by a solver step); ask for it with "
            f"net.forward(blobs=[...]) or run net.forward() / net.backward(), which keep every blob")

    @property
    def has_diff(self) -> bool:
        return self._diff is not None and self._diff is not RELEASED

    def share_data(self, other: "Blob") -> None:
        """Use ``other``'s data array (Caffe's ShareData); shapes must match in count."""
        self._data = other.data.reshape(self._shape)

    def release(self) -> None:
        """Free both arrays; reading them raises ``ReleasedBlobError`` until they are written again."""
        self.release_data()
        self.release_diff()

    def release_data(self) -> None:
        self._data = RELEASED

    def release_diff(self) -> None:
        self._diff = RELEASED

    @property
    def data_released(self) -> bool:
        return self._data is RELEASED

    @property
    def diff_released(self) -> bool:
        return self._diff is RELEASED

    def renew(self, data: bool = True, diff: bool = False) -> None:
        """Make released arrays writable again (zeros on next use); live arrays are kept."""
        if data and self._data is RELEASED:
            self._data = None
        if diff and self._diff is RELEASED:
            self._diff = None

    def host_data(self) -> np.ndarray:
        return to_numpy(self.data)

    def host_diff(self) -> np.ndarray:
        return to_numpy(self.diff)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._data, self._diff) if a is not None and a is not RELEASED)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"Blob({name}shape={self._shape}, dtype={self.dtype.name}, device={self.device!r})"
