"""Numerical gradient checks in the spirit of Caffe's GradientChecker, and the golden comparison measure.

The objective is ``L = sum_t <top_t, R_t>`` with fixed random ``R_t`` (so every top element
is checked at once); the analytic gradient comes from one backward with top diffs ``R_t``,
the numeric one from central differences, element by element, in float64.  As in Caffe an
element passes when ``|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)``;
elements whose input lies within ``kink_range`` of ``kink`` are skipped (non-smooth points
such as ReLU's 0).  A NaN or inf on either side fails its element: it never counts as "within
the threshold".  ``scaled_error`` is the measure of the golden reference data, with the same rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .backend import to_numpy
from .blob import Blob
from .layer import Layer


@dataclass
class GradientReport:
    """Outcome of one check: the worst scaled error and every failing element."""

    checked: int = 0
    worst: float = 0.0
    failures: list[str] = field(default_factory=list)

    def assert_ok(self) -> None:
        if self.failures:
            shown = "\n  ".join(self.failures[:10])
            raise AssertionError(f"{len(self.failures)} of {self.checked} gradient elements differ "
                                 f"(worst scaled error {self.worst:.3g}):\n  {shown}")


def _compare(report: GradientReport, what: str, analytic: np.ndarray, numeric: np.ndarray,
             inputs: np.ndarray, threshold: float, kink: float, kink_range: float) -> None:
    for idx in np.ndindex(*analytic.shape):
        if kink_range > 0 and abs(inputs[idx] - kink) < kink_range:
            continue
        a, n = float(analytic[idx]), float(numeric[idx])
        err = abs(a - n) / max(abs(a), abs(n), 1.0) if math.isfinite(a) and math.isfinite(n) else math.inf
        report.checked += 1
        report.worst = max(report.worst, err)
        if not err <= threshold:
            report.failures.append(f"{what}{list(idx)}: analytic {a:.6g}, numeric {n:.6g}")


def scaled_error(ours, reference) -> float:
    """max |ours - ref| / max(1, max |ref|) (the golden data's measure); inf when either array holds a
    NaN or an inf, so that a non-finite value fails every threshold and wins every worst-error reduction."""
    reference = np.asarray(to_numpy(reference), np.float64)
    ours = np.asarray(to_numpy(ours), np.float64).reshape(reference.shape)
    if not (np.isfinite(ours).all() and np.isfinite(reference).all()):
        return math.inf
    return float(np.abs(ours - reference).max(initial=0.0) / max(1.0, float(np.abs(reference).max(initial=0.0))))


def check_gradients(objective: Callable[[], float], analytic: Callable[[], list[np.ndarray]],
                    variables: Sequence[tuple[str, Blob]], stepsize: float = 1e-3,
                    threshold: float = 1e-3, kink: float = 0.0, kink_range: float = -1.0,
                    kink_inputs: "Sequence[np.ndarray | None] | None" = None) -> GradientReport:
    """Compare ``analytic()`` (one array per variable) with central differences of ``objective()``.

    ``variables`` are (label, blob) pairs whose ``data`` is perturbed in place.
    ``kink_inputs[k]`` is the array tested against ``kink`` for variable k (default: its data).
    """
    grads = [to_numpy(g).astype(np.float64) for g in analytic()]
    report = GradientReport()
    for k, (label, blob) in enumerate(variables):
        data = blob.data
        numeric = np.zeros(blob.shape, np.float64)
        flat = data.reshape(-1)
        for i in range(flat.size):
            original = flat[i].item()
            flat[i] = original + stepsize
            plus = objective()
            flat[i] = original - stepsize
            minus = objective()
            flat[i] = original
            numeric.reshape(-1)[i] = (plus - minus) / (2 * stepsize)
        inputs = kink_inputs[k] if kink_inputs is not None and kink_inputs[k] is not None else to_numpy(data)
        _compare(report, label, grads[k], numeric, np.asarray(inputs), threshold, kink, kink_range)
    return report


def check_layer(layer: Layer, bottoms: Sequence[Blob], tops: Sequence[Blob], *, check_bottoms: "Sequence[int] | None" = None,
                check_params: bool = True, stepsize: float = 1e-3, threshold: float = 1e-3,
                kink: float = 0.0, kink_range: float = -1.0, seed: int = 1701) -> GradientReport:
    """Check bottom and parameter gradients of a set-up layer (blobs should be float64).

    In-place layers are supported: bottom data is restored before every forward.
    """
    xp = layer.xp
    rs = np.random.default_rng(seed)
    check_bottoms = list(range(len(bottoms))) if check_bottoms is None else list(check_bottoms)
    saved = [xp.array(b.data, copy=True) for b in bottoms]
    layer.forward(bottoms, tops)
    weights = [xp.asarray(rs.standard_normal(t.shape)).astype(t.dtype) for t in tops]

    def restore_inputs() -> None:
        for blob, value in zip(bottoms, saved):
            blob.data = xp.array(value, copy=True)

    def objective() -> float:
        restore_inputs()
        layer.forward(bottoms, tops)
        return float(sum(float((t.data * w).sum()) for t, w in zip(tops, weights)))

    params = list(range(len(layer.blobs))) if check_params else []

    def analytic() -> list[np.ndarray]:
        restore_inputs()
        layer.forward(bottoms, tops)
        for t, w in zip(tops, weights):
            t.diff = xp.array(w, copy=True)
        for p in params:
            layer.blobs[p].diff = xp.zeros_like(layer.blobs[p].data)
        propagate = [i in check_bottoms for i in range(len(bottoms))]
        layer.backward(tops, propagate, bottoms)
        grads = [to_numpy(bottoms[i].diff).copy() for i in check_bottoms]
        return grads + [to_numpy(layer.blobs[p].diff).copy() for p in params]

    # Perturb copies held outside the (possibly in-place) tops: bottoms are restored from `saved`.
    variables = [(f"bottom{i}", _SavedInput(saved, i)) for i in check_bottoms]
    variables += [(f"param{p}", layer.blobs[p]) for p in params]
    kinks = [to_numpy(saved[i]) for i in check_bottoms] + [None] * len(params)
    report = check_gradients(objective, analytic, variables, stepsize, threshold, kink, kink_range, kinks)
    restore_inputs()
    return report


class _SavedInput:
    """Adapter exposing ``saved[i]`` as a blob-like ``data`` so the checker can perturb it."""

    def __init__(self, saved: list, index: int):
        self._saved, self._index = saved, index

    @property
    def data(self):
        return self._saved[self._index]

    @property
    def shape(self):
        return tuple(self._saved[self._index].shape)


def check_net_params(net, stepsize: float = 1e-3, threshold: float = 1e-3, seed: int = 1701) -> GradientReport:
    """Check every learnable parameter of ``net`` (e.g. shared ones) against ``sum <output, R>``.

    The net should be built with ``dtype=np.float64`` and its inputs set.
    """
    rs = np.random.default_rng(seed)
    net.forward_range()
    weights = {name: rs.standard_normal(net.blobs[name].shape) for name in net.outputs}

    def objective() -> float:
        net.forward_range()
        return float(sum(float((to_numpy(net.blobs[n].data) * w).sum()) for n, w in weights.items()))

    def analytic() -> list[np.ndarray]:
        net.forward_range()
        for name, w in weights.items():
            blob = net.blobs[name]
            blob.diff = blob.xp.asarray(w, dtype=blob.dtype)
        net.clear_param_diffs()
        net.backward_range()
        return [to_numpy(p.blob.diff).copy() for p in net.learnable_params]

    variables = [(f"{p.owner}/{p.name or i}", p.blob) for i, p in enumerate(net.learnable_params)]
    return check_gradients(objective, analytic, variables, stepsize, threshold)
