"""SGDSolver: Caffe's momentum SGD (SGDSolver::ApplyUpdate, ClipGradients, its solver state).

>>> solver = SGDSolver("solver.prototxt")
>>> solver.net.copy_from("init.caffemodel")
>>> solver.step(100)              # or solver.solve(), which also snapshots at the end

ApplyUpdate: rate = lr policy; clip the global L2 norm of all diffs to ``clip_gradients``; for
every learnable parameter scale by 1/iter_size, add weight decay, fold into the momentum history
and subtract.  After a step a parameter's diff holds the update value.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..backend import get_array_module
from ..lr_policy import learning_rate
from ..proto import caffe_pb2 as pb
from .solver import Solver, TrainingDiverged, fmt
from .state import history_arrays, locate_learned_net, write_solver_state
from .update import sgd_update

log = logging.getLogger(__name__)
f32 = np.float32


class SGDSolver(Solver):
    """Caffe's SGD solver; ``history`` holds the momentum, one array per learnable parameter."""

    def __init__(self, solver: "str | os.PathLike | pb.SolverParameter", device: str = "cpu", math: str = "strict"):
        super().__init__(solver, device, math)
        self.history = [p.blob.xp.zeros(p.blob.shape, p.blob.dtype) for p in self.net.learnable_params]

    def apply_update(self) -> np.float32:
        """SGDSolver::ApplyUpdate: lr policy, gradient clipping, then the per-parameter update."""
        p = self.param
        rate, step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        self._clip_gradients(rate)
        scale = f32(1) / f32(p.iter_size) if p.iter_size > 1 else f32(1)
        weight_decay, momentum = f32(p.weight_decay), f32(p.momentum)
        l1 = p.regularization_type == "L1"
        for param, history in zip(self.net.learnable_params, self.history):
            blob = param.blob
            sgd_update(blob.device)(blob.data, blob.diff, history, local_rate=rate * f32(param.lr_mult),
                                    local_decay=weight_decay * f32(param.decay_mult), momentum=momentum, l1=l1,
                                    scale=scale)
        return rate

    def _clip_gradients(self, rate: np.float32) -> None:
        """Scale all diffs so their global L2 norm is at most the threshold (clip < 0: off).

        With ``adjustable_clip`` (MemNet's patched Caffe) the threshold is clip_gradients / rate.
        """
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        if self.param.adjustable_clip:
            with np.errstate(divide="ignore"):
                clip = clip / rate
        sumsq = f32(0)
        for param in self.net.learnable_params:
            diff = param.blob.diff.ravel()
            sumsq += f32(float(param.blob.xp.dot(diff, diff)))
        norm = f32(np.sqrt(sumsq))
        if not np.isfinite(norm):
            raise TrainingDiverged(f"iteration {self.iter}: the gradient norm is {float(norm)}; training stopped "
                                   "before updating the weights (the last snapshot, if any, is kept)")
        if norm > clip:
            factor = clip / norm
            # Caffe logs this every iteration; MemNet clips nearly always, so only display iterations do here
            displaying = self.param.display and self.iter % self.param.display == 0
            log.log(logging.INFO if displaying else logging.DEBUG, "Gradient clipping: scaling down gradients "
                    "(L2 norm %s > %s) by scale factor %s", fmt(norm), fmt(clip), fmt(factor))
            for param in self.net.learnable_params:
                param.blob.diff *= factor

    def snapshot_solver_state(self, path: str, model: str) -> None:
        write_solver_state(path, self.iter, model, self.current_step, self.history)

    def restore_solver_state(self, state: pb.SolverState, path: str) -> None:
        params = self.net.learnable_params
        arrays = history_arrays(state, [q.blob.shape for q in params], path, [q.owner for q in params])
        if state.HasField("learned_net"):
            self.net.copy_from(locate_learned_net(state.learned_net, path))
        for history, array in zip(self.history, arrays):
            history[...] = get_array_module(history).asarray(array, dtype=history.dtype)
