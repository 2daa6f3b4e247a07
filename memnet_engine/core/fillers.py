"""Weight fillers with Caffe's semantics (constant, gaussian, uniform, xavier, msra, ...)."""
from __future__ import annotations

import numpy as np

from .errors import NetError
from .proto import caffe_pb2 as pb

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed the generator used by fillers and shuffling (Caffe's ``random_seed``)."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    return _rng


def _fan(shape: tuple[int, ...], norm: int) -> float:
    count = int(np.prod(shape))
    if count == 0:
        raise NetError(f"xavier/msra fillers need a non-empty blob, got shape {shape}")
    fan_in = count / shape[0] if shape else count
    fan_out = count / shape[1] if len(shape) > 1 else count
    if norm == pb.FillerParameter.FAN_OUT:
        return fan_out
    if norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(param: pb.FillerParameter, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A new host array of ``shape`` filled as ``param`` says."""
    kind = param.type
    if kind == "constant":
        out = np.full(shape, param.value)
    elif kind == "gaussian":
        if param.std < 0:
            raise NetError(f"gaussian filler std must not be negative, got {param.std:g}")
        out = _rng.normal(param.mean, param.std, shape)
        if param.sparse >= 0:
            if len(shape) < 2:
                raise NetError("sparse gaussian filler needs a blob of at least 2 axes")
            keep = _rng.random(shape) < param.sparse / shape[0]
            out = out * keep
    elif kind == "uniform":
        if param.min > param.max:
            raise NetError(f"uniform filler min {param.min:g} is above max {param.max:g}")
        out = _rng.uniform(param.min, param.max, shape)
    elif kind == "xavier":
        scale = np.sqrt(3.0 / _fan(shape, param.variance_norm))
        out = _rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        std = np.sqrt(2.0 / _fan(shape, param.variance_norm))
        out = _rng.normal(0.0, std, shape)
    elif kind == "positive_unitball":
        if not shape or shape[0] == 0:
            raise NetError(f"positive_unitball filler needs a non-empty blob of at least 1 axis, got shape {shape}")
        out = _rng.uniform(0.0, 1.0, shape)
        rows = out.reshape(shape[0], -1)
        rows /= rows.sum(axis=1, keepdims=True)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise NetError("bilinear filler needs a square 4-D kernel")
        k = shape[3]
        f = np.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - np.abs(np.arange(k) / f - c)
        out = np.broadcast_to(np.outer(ramp, ramp), shape)
    else:
        raise NetError(f"unknown filler type {kind!r}")
    return np.array(out, dtype=dtype).reshape(shape)
