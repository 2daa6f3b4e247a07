"""What a training iteration needs from the device, gathered in one small array read once per iteration.

On a GPU every read of a device value makes the host wait for the device.  An iteration's losses,
its gradient sum of squares (for clipping) and the flag of a non-finite update therefore stay on
the device in ``StepStatus.array`` and reach the host together, in one transfer, just before the
update; the solver then checks them for divergence.  On the CPU the same array is a NumPy array.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import array_module, to_numpy
from ..memory import require, shape_bytes

f32 = np.float32


@dataclass(frozen=True)
class StatusValues:
    """A host copy of the status array."""

    sumsq: np.float32           # the gradient sum of squares (when the rule computed it)
    update_nonfinite: bool      # the last update left a non-finite weight
    losses: np.ndarray          # the loss of each iter_size pass (float32)

    @property
    def loss(self) -> np.float32:
        """The iteration's loss: the mean over its passes, added in float32 as Caffe does."""
        total = f32(0)
        for value in self.losses:
            total += value
        return total / f32(len(self.losses))


class StepStatus:
    """``array`` = [gradient sum of squares, non-finite update flag, loss of pass 0, 1, ...]."""

    SUMSQ, NONFINITE, LOSSES = 0, 1, 2

    def __init__(self, device: str, dtype, passes: int):
        size = self.LOSSES + int(passes)
        require(shape_bytes((size,), np.dtype(dtype).itemsize), f"iter_size {passes} (a loss slot per pass)", device)
        self.array = array_module(device).zeros(size, dtype)

    @property
    def sumsq_slot(self):
        """Where the rule writes the gradient sum of squares (a 1-element view)."""
        return self.array[self.SUMSQ:self.SUMSQ + 1]

    @property
    def nonfinite_slot(self):
        """Where the update raises its flag (a 1-element view)."""
        return self.array[self.NONFINITE:self.NONFINITE + 1]

    def set_loss(self, index: int, loss) -> None:
        """Store pass ``index``'s loss (a float, or a 0-d device array: no wait for the device)."""
        self.array[self.LOSSES + index] = loss

    def read(self) -> StatusValues:
        """The one device-to-host transfer of an iteration."""
        host = to_numpy(self.array).astype(f32)
        return StatusValues(host[self.SUMSQ], bool(host[self.NONFINITE]), host[self.LOSSES:])
