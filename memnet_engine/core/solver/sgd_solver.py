"""SGDSolver: Caffe's momentum SGD (SGDSolver::ApplyUpdate, ClipGradients, its solver state).

>>> solver = SGDSolver("solver.prototxt")
>>> solver.net.copy_from("init.caffemodel")
>>> solver.step(100)              # or solver.solve(), which also snapshots at the end

ApplyUpdate: rate = lr policy; clip the global L2 norm of all diffs to ``clip_gradients``; for
every learnable parameter scale by 1/iter_size, add weight decay, fold into the momentum history
and subtract (``update.FlatSGD``: one pass over the flat state).  After a step a parameter's diff
holds the update value.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..backend import get_array_module
from ..lr_policy import learning_rate
from ..proto import caffe_pb2 as pb
from .solver import Solver, TrainingDiverged, fmt
from .state import history_arrays, load_learned_net, solver_state_message
from .step_status import StatusValues
from .update import FlatSGD, UpdateSettings

log = logging.getLogger(__name__)
f32 = np.float32


class SGDSolver(Solver):
    """Caffe's SGD solver over the net's flat learnable state (``net.param_buffer``).

    ``history`` lists each learnable parameter's momentum (views of one flat array, in
    learnable-param order, as the .solverstate holds them).
    """

    def __init__(self, solver: "str | os.PathLike | pb.SolverParameter", device: str = "cpu", math: str = "strict"):
        super().__init__(solver, device, math)
        self.rule = FlatSGD(self.net.param_buffer)
        self.history = self.rule.history_views()

    def before_update(self) -> None:
        """The gradient sum of squares for clipping, left on the device in the iteration's status."""
        if self.param.clip_gradients >= 0:
            self.rule.sum_of_squares(self.status.sumsq_slot)

    def apply_update(self, values: StatusValues) -> np.float32:
        """SGDSolver::ApplyUpdate: lr policy, gradient clipping, then the fused update of every parameter."""
        p = self.param
        rate, step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        settings = UpdateSettings(rate=rate, weight_decay=f32(p.weight_decay), momentum=f32(p.momentum),
                                  clip_scale=self._clip_scale(rate, values.sumsq),
                                  iter_scale=f32(1) / f32(p.iter_size) if p.iter_size > 1 else f32(1),
                                  l1=p.regularization_type == "L1")
        self.rule.apply(settings, self.status.nonfinite_slot)
        return rate

    def _clip_scale(self, rate: np.float32, sumsq: np.float32) -> np.float32:
        """The factor that brings the global L2 norm of all diffs down to the threshold (clip < 0: off).

        With ``adjustable_clip`` (MemNet's patched Caffe) the threshold is clip_gradients / rate.
        """
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return f32(1)
        if self.param.adjustable_clip:
            with np.errstate(divide="ignore"):
                clip = clip / rate
        norm = f32(np.sqrt(sumsq))
        if not np.isfinite(norm):
            raise TrainingDiverged(f"iteration {self.iter}: the gradient norm is {float(norm)}; training stopped "
                                   "before updating the weights (the last snapshot, if any, is kept)")
        if norm <= clip:
            return f32(1)
        factor = clip / norm
        # Caffe logs this every iteration; MemNet clips nearly always, so only display iterations do here
        displaying = self.param.display and self.iter % self.param.display == 0
        log.log(logging.INFO if displaying else logging.DEBUG, "Gradient clipping: scaling down gradients "
                "(L2 norm %s > %s) by scale factor %s", fmt(norm), fmt(clip), fmt(factor))
        return factor

    def solver_state(self, model: str) -> pb.SolverState:
        return solver_state_message(self.iter, model, self.current_step, self.history)

    def restore_solver_state(self, state: pb.SolverState, path: str) -> None:
        params = self.net.learnable_params
        arrays = history_arrays(state, [q.blob.shape for q in params], path, [q.owner for q in params])
        if state.HasField("learned_net"):
            load_learned_net(self.net, state, path)
        for history, array in zip(self.history, arrays):
            history[...] = get_array_module(history).asarray(array, dtype=history.dtype)
