"""EuclideanLoss on the GPU: the loss is a reduction (reduce.py), its gradient kernels/loss.cu."""
from __future__ import annotations

from ..backend import cupy_module
from .eltwise import weighted_sum
from .loader import contiguous, empty_like, launch, scalar
from .reduce import channel_sums


def euclidean_forward(a, b, num: int):
    """(difference a - b, loss array of shape ()) with loss = sum(difference^2) / num / 2."""
    difference = weighted_sum([a, b], [1.0, -1.0])
    loss = cupy_module().empty((1,), difference.dtype)
    channel_sums(difference, (1, 1, difference.size), dots=loss, alpha=0.5 / num)
    return difference, loss.reshape(())


def euclidean_backward(difference, loss_diff, sign: float, num: int):
    """``sign * loss_diff[0] / num * difference`` (loss_diff: the loss top's diff, on the device)."""
    dx = empty_like(difference)
    dt = difference.dtype
    launch("loss", "euclidean_backward", dt, dx.size, difference, contiguous(loss_diff), scalar(sign, dt),
           scalar(num, dt), dx)
    return dx
