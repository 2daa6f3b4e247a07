"""Precise BatchNorm: recompute every BatchNorm layer's global statistics for the current weights.

Caffe's BatchNorm keeps exponentially decayed running sums (``moving_average_fraction`` 0.999), so
after a short run the stored statistics still mix in those of much older weights and the TEST net
normalises with the wrong numbers.  As Detectron's PreciseBN and SWA's ``bn_update`` do, this runs
K forward passes of a TRAIN-phase net with frozen weights (every BatchNorm normalising with its
batch statistics, exactly as in training, so later layers see what training showed them) and
replaces the running sums by the statistics of what each layer saw.

"Exact" means the population statistics of the pooled samples: per channel, the mean of all
m = K * N * H * W values the layer received in the K batches, and their unbiased variance
sum((x - mean)^2) / (m - 1) (Caffe's m / (m - 1) correction, over the pooled count).  The
average of the per-batch variances (PreciseBN's first version, and what Caffe's own sums give
with fraction 1) misses the spread of the batch means, var = E[var_batch] + Var[mean_batch]:
with batches of a few patches from different photos that spread is large, and a test-time
normaliser built without it is too narrow.  For equal batch sizes the pooled mean is the mean of
the batch means.  The layers' own per-batch statistics (their running blobs after one forward
from zero) are merged in float64 with Chan et al.'s pairwise update, so nothing cancels.

The result is written as Caffe's three blobs with scale factor 1: ``blob0 = mean``,
``blob1 = variance``, ``blob2 = 1``, so ``net.save()`` gives an ordinary ``.caffemodel``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from .backend import to_numpy
from .errors import MemnetError
from .net import Net


@dataclass
class PooledStatistics:
    """Running count, mean and sum of squared deviations (M2) of one layer's channels, in float64."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add_batch(self, count: int, mean: np.ndarray, unbiased_var: np.ndarray) -> None:
        """Merge one batch of ``count`` values per channel given its mean and unbiased variance."""
        batch_m2 = unbiased_var * max(count - 1, 0)
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean.copy(), batch_m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + batch_m2 + delta * delta * (self.count * count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """The unbiased variance of all pooled values (0 for a single value, as Caffe's correction 1)."""
        return self.m2 / max(self.count - 1, 1)


def batch_norm_layers(net: Net) -> list:
    """The BatchNorm layers of ``net`` that compute batch statistics (those precise BN recomputes)."""
    layers = [layer for layer in net.layers if layer.type == "BatchNorm" and not layer.use_global_stats]
    seen: dict[int, str] = {}
    for layer in layers:
        owner = seen.setdefault(id(layer.blobs[0]), layer.name)
        if owner != layer.name:
            raise MemnetError(f"precise BN: BatchNorm layers '{owner}' and '{layer.name}' share their statistics "
                              "blobs; each layer needs its own")
    return layers


def precise_bn(net: Net, batches: "int | Iterable[Mapping[str, np.ndarray]]") -> dict[str, PooledStatistics]:
    """Recompute the global statistics of ``net``'s BatchNorm layers over K batches; returns them by layer.

    ``net`` is a TRAIN-phase net (its BatchNorm layers use batch statistics).  ``batches`` is K, the
    number of forward passes, for a net whose data layers produce its batches (they advance by K),
    or an iterable of input dicts ``{input_name: array}`` fed through ``net.forward(**inputs)``.
    Only the BatchNorm blobs change; the layers' own kernels (CPU or GPU) compute each batch.
    """
    layers = batch_norm_layers(net)
    if not layers:
        raise MemnetError(f"precise BN: net '{net.name}' has no BatchNorm layer that computes batch statistics "
                          "(give a TRAIN-phase net)")
    feeds = ({} for _ in range(batches)) if isinstance(batches, int) else batches
    bottoms = {layer.name: net.blobs[net.bottom_names[net.layers.index(layer)][0]] for layer in layers}
    pooled = {layer.name: PooledStatistics() for layer in layers}
    for inputs in feeds:
        for layer in layers:
            for blob in layer.blobs:
                blob.data[...] = 0
        net.forward(**inputs)
        for layer in layers:
            shape = bottoms[layer.name].shape
            count = int(np.prod(shape, dtype=np.int64)) // (shape[1] if len(shape) > 1 else 1)
            mean_sum, var_sum, scale = (to_numpy(blob.data).astype(np.float64) for blob in layer.blobs)
            pooled[layer.name].add_batch(count, mean_sum / scale[0], var_sum / scale[0])
    if not next(iter(pooled.values())).count:
        raise MemnetError("precise BN: no batches given")
    for layer in layers:
        stats = pooled[layer.name]
        for blob, value in zip(layer.blobs, (stats.mean, stats.variance, np.ones(1))):
            blob.data[...] = blob.xp.asarray(value.astype(blob.dtype))
    return pooled
