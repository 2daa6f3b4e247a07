"""Fused SGD momentum / weight-decay update of one parameter blob (kernels/sgd.cu)."""
from __future__ import annotations

import numpy as np

from .loader import launch, scalar


def sgd_update_gpu(data, diff, history, *, local_rate: float, local_decay: float, momentum: float,
                   l1: bool = False, scale: float = 1.0) -> None:
    """Caffe's SGD step for one blob, in place on the three arrays (same shape and dtype, contiguous).

    ``diff *= scale`` (if scale != 1); ``diff += local_decay * data`` (``* sign(data)`` if l1) when
    local_decay != 0; ``history = local_rate * diff + momentum * history``; ``diff = history``;
    ``data -= diff``.
    """
    for name, array in (("diff", diff), ("history", history)):
        if array.shape != data.shape or array.dtype != data.dtype:
            raise ValueError(f"sgd_update_gpu: {name} {array.shape} {array.dtype} does not match data "
                             f"{data.shape} {data.dtype}")
    for name, array in (("data", data), ("diff", diff), ("history", history)):
        if not array.flags.c_contiguous:
            raise ValueError(f"sgd_update_gpu: {name} must be C-contiguous (updated in place)")
    dt = data.dtype
    launch("sgd", "sgd_update", dt, data.size, data, diff, history, scalar(local_rate, dt), scalar(local_decay, dt),
           scalar(momentum, dt), scalar(scale, dt), np.int32(bool(l1)))
