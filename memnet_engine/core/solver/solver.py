"""Solver: Caffe's Solver (Step, Solve, TestAll, Snapshot, Restore), independent of the update rule.

One iteration, as in Caffe: clear the parameter diffs; run the test nets when due; forward and
backward ``iter_size`` times (the loss is their mean, smoothed over ``average_loss`` iterations
for display); then ``apply_update`` (the subclass's rule, e.g. SGDSolver's).  Snapshots write the
weights (``.caffemodel``) and the subclass's state (``.solverstate``).

The losses, the rule's gradient norm and the flag of a non-finite update stay on the device until
one read per iteration (``StepStatus``), which is where divergence stops training: before the
update when the loss or gradient norm is not finite; at the next read, or before a snapshot, when
an update made a weight non-finite, so that such weights are never snapshotted.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backend import to_numpy
from ..errors import MemnetError
from ..fillers import set_random_seed
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2 as pb
from ..prototxt import read_net_param
from ..integrity import read_seal
from ..weights import net_to_proto, sealed_bytes
from .settings import build_net, check_settings, net_sources, read_solver
from .signals import DEFAULT_EFFECTS, deferred_signals, signal_handlers
from .snapshot import prune, recover, write_pair
from .state import check_progress, read_solver_state, snapshot_filename
from .step_status import StatusValues, StepStatus

log = logging.getLogger(__name__)
f32 = np.float32
STOP, SNAPSHOT = "stop", "snapshot"


class TrainingDiverged(MemnetError):
    """The loss (or the gradient norm) became NaN or infinite; the weights were left as they were."""


@dataclass
class IterationStats:
    """What one finished iteration reports to ``Solver.iteration_hooks``."""

    iteration: int          # iterations done (Caffe's iter_ after the update)
    loss: float             # this iteration's loss (mean over iter_size)
    smoothed_loss: float    # mean over the last average_loss iterations
    lr: float               # the rate used for this update


class SingleProcess:
    """How a lone solver coordinates with other ranks: it has none (see distributed.DataParallel)."""

    size, is_root = 1, True

    def gradients_ready(self, solver: "Solver") -> None:
        """Called once the iteration's gradients are complete, before clipping and the update."""

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank."""
        return bool(flag)

    def updated(self, solver: "Solver") -> None:
        """Called after each update."""

    def agree(self, request: "str | None") -> "str | None":
        """The stop/snapshot request every rank acts on."""
        return request


def _skip_batches(net: Net, batches: int) -> None:
    """Advance every data layer of ``net`` by ``batches`` forward passes (same rows, same RNG draws)."""
    if batches <= 0:
        return
    for layer in net.layers:
        skip = getattr(layer, "skip_batches", None)
        if skip is not None:
            skip(batches)


def _blob_loss_weights(net: Net) -> dict[str, float]:
    """Caffe's blob_loss_weights: each blob's loss weight, set by the last layer writing it."""
    return {name: layer.loss(j) for layer, tops in zip(net.layers, net.top_names) for j, name in enumerate(tops)}


def fmt(x) -> str:
    """A number the way a C++ ostream prints it (6 significant digits)."""
    return f"{float(x):.6g}"



class Solver:
    """Caffe's Solver over a train net (and optional test nets sharing its weights).

    ``solver`` is a solver .prototxt path or a SolverParameter.  Attributes as in pycaffe:
    ``net``, ``test_nets``, ``iter``; plus ``param``, ``current_step`` and ``smoothed_loss``.
    ``iteration_hooks`` are called with an IterationStats after every iteration,
    ``snapshot_hooks`` with (caffemodel, solverstate) after every snapshot.  Subclasses give the
    update rule (``apply_update``) and its saved state.  ``math`` is the nets' GEMM precision on a
    GPU: "strict" float32 or the opt-in "tf32" (see core/workspace.py).
    """

    def __init__(self, solver: "str | os.PathLike | pb.SolverParameter", device: str = "cpu", math: str = "strict"):
        if isinstance(solver, pb.SolverParameter):
            self.param = pb.SolverParameter()
            self.param.CopyFrom(solver)
        else:
            self.param = read_solver(solver)
        param = self.param
        check_settings(param)
        sources = net_sources(param)
        if len(sources) != 1:
            raise MemnetError("the solver must name exactly one train net with one of net, net_param, train_net, "
                              f"train_net_param (it gives {', '.join(sources) or 'none'})")
        self.device, self.math = device, math
        self._check_snapshot_prefix()
        if param.random_seed >= 0:
            set_random_seed(param.random_seed)
        log.info("Creating training net from %s", f"net file: {getattr(param, sources[0])}"
                 if sources[0] in ("net", "train_net") else sources[0])
        self.net = build_net(self._train_source(), TRAIN, param.train_state, device, math)
        for weights in param.weights:
            for path in weights.split(","):
                log.info("Finetuning from %s", path)
                self.net.copy_from(path)
        self.test_nets = self._build_test_nets()
        for test_net in self.test_nets:
            test_net.share_weights_with(self.net)
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = f32(0)
        self.requested_early_exit = False
        self.iteration_hooks: list[Callable[[IterationStats], None]] = []
        self.snapshot_hooks: list[Callable[[str, str], None]] = []
        self._losses: list[np.float32] = []
        self._request: "str | None" = None
        self.status = StepStatus(self.net.device, self.net.dtype, param.iter_size)
        self.coordinator: SingleProcess = SingleProcess()
        self.signal_effects: dict[str, str] = dict(DEFAULT_EFFECTS)  # signal name -> stop | snapshot | none
        self.stop_signal: "str | None" = None  # the signal that stopped the run, if one did
        self.signal_notes: list[tuple[int, str]] = []  # (log level, message) from signal handlers, logged here
        self.keep_snapshots = 0                # > 0: keep only the newest N snapshot pairs
        self.last_snapshot: "str | None" = None  # the solverstate written last by this solver

    # ------------------------------------------------------------------ construction helpers
    def _train_source(self) -> "str | pb.NetParameter":
        p = self.param
        for field in ("train_net_param", "net_param"):
            if p.HasField(field):
                return getattr(p, field)
        return p.train_net if p.HasField("train_net") else p.net

    def _build_test_nets(self) -> list[Net]:
        """Caffe's InitTestNets: test_net_param, then test_net files, then the generic net per remaining test_iter."""
        p = self.param
        specific = [("test_net_param", q) for q in p.test_net_param] + [(f"test_net file: {f}", f) for f in p.test_net]
        generic = next(((f"net file: {p.net}" if f == "net" else f, getattr(p, f)) for f in ("net_param", "net")
                        if p.HasField(f)), None)
        if len(p.test_iter) < len(specific) or (generic is None and len(p.test_iter) != len(specific)):
            raise MemnetError(f"test_iter must be given once per test net ({len(specific)} test nets, "
                              f"{len(p.test_iter)} test_iter values)")
        sources = specific + [generic] * (len(p.test_iter) - len(specific))
        if p.test_state and len(p.test_state) != len(sources):
            raise MemnetError(f"test_state must be unspecified or given once per test net ({len(sources)})")
        if sources and p.test_interval <= 0:
            raise MemnetError("test nets need test_interval > 0")
        nets = []
        for i, (label, source) in enumerate(sources):
            log.info("Creating test net (#%d) specified by %s", i, label)
            nets.append(build_net(source, TEST, p.test_state[i] if p.test_state else None, self.device, self.math))
        return nets

    def _check_snapshot_prefix(self) -> None:
        """Fail early (as Caffe does) when periodic snapshots could not be written."""
        p = self.param
        if not p.snapshot_prefix:
            name = read_net_param(self._train_source()).name or "net"
            p.snapshot_prefix = name
        if p.snapshot <= 0:
            return
        existing = os.path.dirname(os.path.abspath(p.snapshot_prefix))
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            what = "is not a folder" if not os.path.isdir(existing) else "is not writable"
            raise MemnetError(f"cannot write snapshots to prefix '{p.snapshot_prefix}': {existing} {what}")

    # ------------------------------------------------------------------ training
    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = f32(0)
        timer, iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if self._test_due(self.iter):
                self.test_all()
                if self.requested_early_exit:
                    break
            display = p.display and self.iter % p.display == 0
            for k in range(p.iter_size):
                self.status.set_loss(k, self.net.forward_backward(keep_intermediates=False))
            self.coordinator.gradients_ready(self)
            self.before_update()
            values = self.status.read()  # the iteration's one device-to-host transfer
            self._check_update_was_finite(values)
            loss = values.loss
            if self.coordinator.any_rank(not np.isfinite(loss)):
                where = f"the loss is {float(loss)}" if not np.isfinite(loss) else "the loss of another rank diverged"
                raise TrainingDiverged(f"iteration {self.iter}: {where}; training stopped before updating the "
                                       "weights (the last snapshot, if any, is kept). Lower base_lr or clip the "
                                       "gradients (clip_gradients)")
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse or 1)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, fmt(per_s), fmt(lapse),
                         p.display, fmt(self.smoothed_loss))
                timer, iterations_last = time.perf_counter(), self.iter
                self._log_outputs("Train", self.net, {n: self.net.blobs[n].data for n in self.net.outputs})
            rate = self.apply_update(values)
            self.iter += 1
            self.coordinator.updated(self)
            for hook in self.iteration_hooks:
                hook(IterationStats(self.iter, float(loss), float(self.smoothed_loss), float(rate)))
            request = self.coordinator.agree(self._take_request())
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def solve(self, resume_file: "str | None" = None, handle_signals: bool = True) -> None:
        """Train to ``max_iter`` (Caffe's Solver::Solve), snapshotting at the end.

        With ``handle_signals`` (main thread only) the signals of ``signal_effects`` act as
        ``caffe train``'s -sigint_effect / -sighup_effect: by default SIGINT (Ctrl-C), SIGTERM and
        SIGUSR1 snapshot and stop after the current iteration, SIGHUP snapshots; a second stopping
        signal aborts (see ``signals``).
        """
        if self.coordinator.is_root:
            recover(self.param.snapshot_prefix)
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", self.param.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            self.restore(resume_file)
        start_iter = self.iter
        with signal_handlers(self, handle_signals):
            self.step(self.param.max_iter - self.iter)
            p = self.param
            if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
                self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if self.param.display and self.iter % self.param.display == 0:
            self._update_smoothed_loss(f32(float(self.net.forward_range())), start_iter, self.param.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, fmt(self.smoothed_loss))
        if self.param.test_interval and self.iter % self.param.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss: np.float32, start_iter: int, average_loss: int) -> None:
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * f32(size - 1) + loss) / f32(size)
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss += (loss - self._losses[idx]) / f32(average_loss)
            self._losses[idx] = loss

    def _check_update_was_finite(self, values: StatusValues) -> None:
        """Stop when the last update (of iteration ``iter - 1``) left a non-finite weight."""
        if values.update_nonfinite:
            raise TrainingDiverged(f"iteration {self.iter - 1}: the update made some weights non-finite; training "
                                   "stopped without snapshotting them (the last snapshot, if any, is kept). Lower "
                                   "base_lr or clip the gradients (clip_gradients)")

    # ------------------------------------------------------------------ what the update rule provides
    def before_update(self) -> None:
        """Device work whose results the update needs, written into ``status`` (read once, next)."""

    def apply_update(self, values: StatusValues) -> np.float32:
        """Update the weights from their diffs, given the iteration's status; returns the learning rate used.

        A rule that makes a weight non-finite sets ``status.nonfinite_slot``.
        """
        raise NotImplementedError

    def solver_state(self, model: str) -> pb.SolverState:
        """The rule's state (iteration, the weights file name ``model``, history) to snapshot."""
        raise NotImplementedError

    def restore_solver_state(self, state: pb.SolverState, path: str) -> None:
        """Load the weights and the rule's history from a read SolverState (``path`` for messages)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ testing
    def _test_due(self, iteration: int) -> bool:
        p = self.param
        return bool(self.test_nets) and p.test_interval > 0 and iteration % p.test_interval == 0 and \
            (iteration > 0 or p.test_initialization)

    def test_all(self) -> list[dict[str, np.ndarray]]:
        """Run every test net (Caffe's TestAll); returns each net's mean outputs."""
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, index: int) -> dict[str, np.ndarray]:
        """Run test net ``index`` for its test_iter batches; log and return the mean of each output."""
        log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net, batches = self.test_nets[index], self.param.test_iter[index]
        sums: dict[str, np.ndarray] = {}
        loss = f32(0)
        for _ in range(batches):
            # with several ranks, requests wait for the agreement at the end of the iteration
            request = self._take_request() if self.coordinator.size == 1 else None
            while request is not None:
                if request == SNAPSHOT:
                    self.snapshot()
                else:
                    self.requested_early_exit = True
                request = self._take_request()
            if self.requested_early_exit:
                log.info("Test interrupted.")
                return {}
            iter_loss = net.forward_range(keep_intermediates=False)
            if self.param.test_compute_loss:
                loss += f32(float(iter_loss))
            for name in net.outputs:
                value = to_numpy(net.blobs[name].data).astype(np.float32)
                sums[name] = sums[name] + value if name in sums else value
        if self.param.test_compute_loss:
            log.info("Test loss: %s", fmt(loss / f32(batches)))
        means = {name: total / f32(batches) for name, total in sums.items()}
        self._log_outputs("Test", net, means)
        return means

    @staticmethod
    def _log_outputs(kind: str, net: Net, values: dict) -> None:
        weights = _blob_loss_weights(net)
        index = 0
        for name in values:  # net.outputs order: sorted by name, as Caffe's std::set
            value, weight = values[name], weights.get(name, 0.0)
            for v in np.ravel(to_numpy(value)):
                note = f" (* {fmt(weight)} = {fmt(f32(weight) * v)} loss)" if weight else ""
                log.info("    %s net output #%d: %s = %s%s", kind, index, name, fmt(v), note)
                index += 1

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> str:
        """Write ``{prefix}_iter_{iter}.caffemodel`` and ``.solverstate`` as a pair (both or neither, see
        ``snapshot.write_pair``); with ``keep_snapshots`` remove older pairs.  Returns the solverstate path.

        Weights that an update made non-finite are not written: TrainingDiverged is raised instead.
        """
        self._check_update_was_finite(self.status.read())
        prefix = self.param.snapshot_prefix
        model = snapshot_filename(prefix, self.iter, ".caffemodel")
        state = snapshot_filename(prefix, self.iter, ".solverstate")
        if not self.coordinator.is_root:  # data-parallel ranks hold the same weights: rank 0 writes them
            return state
        log.info("Snapshotting to binary proto file %s", model)
        model_bytes = sealed_bytes(net_to_proto(self.net, write_diff=self.param.snapshot_diff))
        log.info("Snapshotting solver state to binary proto file %s", state)
        with deferred_signals():  # a second Ctrl-C aborts after the pair, not between its files
            write_pair(model, model_bytes, state, sealed_bytes(self.solver_state(model), read_seal(model_bytes).digest))
        self.last_snapshot = state
        for path in prune(prefix, self.keep_snapshots):
            log.info("Removed %s (--keep-snapshots %d)", path, self.keep_snapshots)
        for hook in self.snapshot_hooks:
            hook(model, state)
        return state

    def restore(self, state_file: "str | os.PathLike") -> None:
        """Continue from a .solverstate (ours or Caffe's): iteration, lr step, momentum, weights.

        Unlike Caffe, the data layers are also advanced to where that many iterations left them,
        so that with a ``random_seed`` a resumed run repeats a straight run exactly.
        """
        path = os.fspath(state_file)
        log.info("Restoring previous solver status from %s", path)
        state = read_solver_state(path)
        check_progress(state, path, self.param.max_iter)
        self.restore_solver_state(state, path)
        self.iter, self.current_step = int(state.iter), int(state.current_step)
        self.replay_data(self.iter)

    def replay_data(self, iterations: int) -> None:
        """Advance the train and test data layers as ``iterations`` iterations did (each data layer draws from
        its own generator, so each is advanced on its own, in time independent of ``iterations``)."""
        p = self.param
        _skip_batches(self.net, iterations * p.iter_size)
        if not self.test_nets or p.test_interval <= 0 or iterations <= 0:
            return
        tests = (iterations - 1) // p.test_interval + (1 if p.test_initialization else 0)  # t = 0, interval, ...
        for net, batches in zip(self.test_nets, p.test_iter):
            _skip_batches(net, tests * batches)

    # ------------------------------------------------------------------ stop / snapshot requests
    def request_stop(self) -> None:
        """Snapshot and stop after the current iteration (what Ctrl-C does)."""
        self._request = STOP

    def request_snapshot(self) -> None:
        """Snapshot after the current iteration and go on (what SIGHUP does)."""
        self._request = SNAPSHOT

    def _take_request(self) -> "str | None":
        while self.signal_notes:
            level, message = self.signal_notes.pop(0)
            log.log(level, "%s", message)
        request, self._request = self._request, None
        return request
