#!/usr/bin/env python3
"""Train a Caffe net with memnet-engine, like `caffe train`.

    python tools/train.py SOLVER.prototxt              # a Caffe solver file
    python tools/train.py NET_train.prototxt           # a net: trained with MemNet's released solver
    python tools/train.py SOLVER.prototxt --snapshot runs/x/x_iter_10000.solverstate   # resume

Given a net instead of a solver, the settings of the original MemNet release are used
(caffe_files/*/MemNet_*_solver.prototxt of tyshiwo/MemNet: base_lr 0.1, momentum 0.9,
weight_decay 1e-4, lr_policy step, gamma 0.1, stepsize 200000, clip_gradients 0.01 with the
adjustable clipping of its patched Caffe, display 10000, snapshot 10000, max_iter 20000000);
the solver-setting flags override them (and a solver file's settings).  A solver file's
clip_gradients keeps BVLC Caffe's meaning (a fixed threshold on the global gradient norm);
--adjustable-clip gives the release's (clip_gradients / current lr), as its patched Caffe did.

Snapshots (``<prefix>_iter_N.caffemodel`` / ``.solverstate``, written as pairs), ``train.log`` (Caffe's
glog format, readable by Caffe's tools/extra/parse_log.py; a resumed run appends to it) and
``loss_curve.png`` (the whole history, redrawn at most every --plot-every seconds) go to ``--out``.
Ctrl-C, SIGTERM and SIGUSR1 snapshot and stop (exit code 75), SIGHUP snapshots (--sig*-effect);
a second stopping signal aborts (exit code 128 + the signal); resume with ``--snapshot``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time
import warnings
from collections import deque

import numpy as np
from tqdm import tqdm

import memnet_engine as me
from ..core.layers.hdf5_data import resolve
from ..memnet.data import ensure_default_training_set
from ..memnet.models.standard import RELEASE_CLIPPING, RELEASE_TRAINING, TRAIN_SOURCE
from ..core.net_param import filter_net
from ..memnet.preview import write_sr_preview
from ..core.prototxt import read_net_param, read_text_file, to_text
from ..core.distributed import DataParallel, World, WeightsDrifted, launched_world
from ..core.distributed.comm import Communicator
from ..core.atomic import remove_stale_temps
from ..core.errors import NonFiniteWeights
from ..core.solver import IterationStats, TrainingDiverged, read_solver
from ..core.solver.signals import DEFAULT_EFFECTS, EFFECTS, deferred_signals
from ..core.solver.snapshot import SnapshotError, recover, snapshot_iterations
from ..core.solver.state import read_solver_state
from .help_format import PlainHelpFormatter
from .model_loading import gpu_available
from .precise_bn import write_precise_bn_snapshot
from .training_log import GlogFormatter, LossCurve, load_matplotlib, read_logged_losses

pb = me.caffe_pb2
log = logging.getLogger("memnet_engine.train")
LOGGERS = ("memnet_engine", "py.warnings")  # what the console and train.log show

NET_FIELDS = {"net": "net_param", "train_net": "train_net_param"}
EXIT_STOPPED = 75  # sysexits' EX_TEMPFAIL: stopped by a signal after a snapshot; resume with --snapshot
OVERRIDES = {"base_lr": "base_lr", "momentum": "momentum", "weight_decay": "weight_decay", "lr_policy": "lr_policy",
             "gamma": "gamma", "stepsize": "stepsize", "clip_gradients": "clip_gradients",
             "adjustable_clip": "adjustable_clip", "snapshot_every": "snapshot", "display": "display",
             "max_iter": "max_iter", "seed": "random_seed"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=PlainHelpFormatter)
    ap.add_argument("model", nargs="?", metavar="SOLVER_OR_NET.prototxt",
                    help="a solver .prototxt, or a net .prototxt to train with MemNet's released solver settings")
    ap.add_argument("--solver", help="the solver .prototxt (instead of the positional argument)")
    ap.add_argument("--weights", help="fine-tune from these .caffemodel weights (comma-separated for several)")
    ap.add_argument("--snapshot", help="resume from this .solverstate")
    ap.add_argument("--out", help="folder for snapshots, train.log and loss_curve.png (default: runs/<net name>)")
    ap.add_argument("--device", choices=["cpu", "gpu"],
                    help="where to train (default: the solver's solver_mode if that device is available, else cpu)")
    ap.add_argument("--gpu", type=gpu_list, metavar="ID[,ID...]",
                    help="GPU number (implies --device gpu); with several ranks (mpirun) a list: rank r uses the "
                         "(r mod len)-th on its node (default: local rank mod the node's GPU count)")
    ap.add_argument("--math", choices=["strict", "tf32"], default="strict",
                    help="GPU convolution products: strict IEEE float32 (default, Caffe's numbers) or TF32 on tensor "
                         "cores (Ampere and later; faster, about 1e-3 relative drift per layer)")
    ap.add_argument("--distributed", action="store_true",
                    help="data-parallel training under mpirun even if the launcher's environment is not recognised "
                         "(normally detected: mpirun -np K python tools/train.py ...)")
    ap.add_argument("--check-weights-every", type=int, default=1000, metavar="N",
                    help="with several ranks, verify every N iterations that all ranks hold the same weights "
                         "(0: never; default %(default)s)")
    data = ap.add_argument_group("training data (the net's HDF5Data layers)")
    data.add_argument("--train-data", metavar="LIST", help="text file listing the .h5 training files (HDF5Data source)")
    data.add_argument("--batch-size", type=int, metavar="N", help="HDF5Data batch size")
    data.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                      help="after training, restore a held-out photo degraded by bicubic x3 and write "
                           "preview_sr_x3.png (bicubic | restored | original); default: on with the built-in "
                           "training set")
    data.add_argument("--precise-bn", type=int, metavar="K",
                      help="after training, recompute the BatchNorm statistics over K training batches with the "
                           "final weights (precise BN), save them as <snapshot>_precise_bn.caffemodel and use them "
                           "for the preview (default: off, Caffe's running averages)")
    solver = ap.add_argument_group("solver settings (override the solver file or MemNet's released settings)")
    solver.add_argument("--max-iter", type=int, metavar="N", help="iterations to train (default 20000000)")
    solver.add_argument("--base-lr", type=float, help="base learning rate (0.1)")
    solver.add_argument("--momentum", type=float, help="momentum (0.9)")
    solver.add_argument("--weight-decay", type=float, help="weight decay (0.0001)")
    solver.add_argument("--lr-policy", choices=["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"],
                        help="learning-rate policy (step)")
    solver.add_argument("--gamma", type=float, help="lr decay factor (0.1)")
    solver.add_argument("--stepsize", type=int, help="iterations per lr step (200000)")
    solver.add_argument("--clip-gradients", type=float, metavar="C",
                        help="clip the global gradient L2 norm to C; < 0 disables (0.01)")
    solver.add_argument(RELEASE_CLIPPING, action=argparse.BooleanOptionalAction, default=None,
                        help="the MemNet release's clipping (its patched Caffe): threshold = clip_gradients / "
                             "current lr.  Default: on for a net prototxt (the release's solver), off for a solver "
                             "file (Caffe's stock clipping at clip_gradients, as BVLC Caffe reads the file)")
    solver.add_argument("--snapshot-every", type=int, metavar="N", help="snapshot every N iterations (10000)")
    solver.add_argument("--display", type=int, metavar="N", help="log the loss every N iterations (10000)")
    solver.add_argument("--seed", type=int, help="random seed (Caffe's random_seed): weight fillers and data "
                             "shuffling, so one seed repeats a run exactly on the CPU (default: unseeded)")
    runs = ap.add_argument_group("preemption, snapshots and checks")
    for name, effect in DEFAULT_EFFECTS.items():
        caffe = [f"-{name.lower()}_effect"] if name in ("SIGINT", "SIGHUP") else []  # caffe train's spelling works too
        runs.add_argument(f"--{name.lower()}-effect", *caffe, choices=EFFECTS, default=effect,
                          metavar="|".join(EFFECTS),
                          help=f"what {name} does: snapshot and stop after the current iteration, snapshot and go on, "
                               f"or nothing (default {effect})")
    runs.add_argument("--keep-snapshots", type=int, default=0, metavar="N",
                      help="keep only the newest N snapshot pairs (default 0: keep all, as Caffe)")
    runs.add_argument("--plot-every", type=float, default=60.0, metavar="SECONDS",
                      help="redraw loss_curve.png at most this often (default %(default)s; it is always drawn at "
                           "the end)")
    runs.add_argument("--strict", action="store_true",
                      help="NaN or infinite values in loaded weights (--weights, --snapshot) are an error, not a "
                           "warning")
    args = ap.parse_args(argv)
    if bool(args.model) == bool(args.solver):
        ap.error("give one SOLVER_OR_NET.prototxt (positional or --solver)")
    if args.weights and args.snapshot:
        ap.error("give --snapshot to resume or --weights to fine-tune, not both")
    if args.precise_bn is not None and args.precise_bn < 1:
        ap.error("--precise-bn must be at least 1 (batches)")
    for name in ("batch_size", "max_iter", "stepsize", "snapshot_every", "display", "keep_snapshots"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "batch_size" else 0):
            ap.error(f"--{name.replace('_', '-')} must not be {'< 1' if name == 'batch_size' else 'negative'}")
    return args


# ---------------------------------------------------------------------------- solver and net
def is_solver_file(path: str) -> bool:
    """True for a solver .prototxt (one naming a train net), False for a net .prototxt."""
    text_param = pb.SolverParameter()
    try:
        read_text_file(path, text_param)
    except me.PrototxtError as solver_error:
        try:
            net = read_text_file(path, pb.NetParameter())
        except me.PrototxtError as net_error:
            raise me.PrototxtError(f"{path} is neither a solver nor a net prototxt; as a net: {net_error}; as a "
                                   f"solver: {solver_error}") from None
        if not len(net.layer) and not len(net.layers):
            raise me.PrototxtError(f"{path}: a net with no layers")
        return False
    if not any(text_param.HasField(f) for f in ("net", "net_param", "train_net", "train_net_param")):
        raise me.PrototxtError(f"{path}: a solver that names no train net (net / train_net)")
    return True


def paper_solver(net_name: str) -> pb.SolverParameter:
    """MemNet's released solver with its patched Caffe's clipping (on the GPU when there is one)."""
    mode = pb.SolverParameter.GPU if gpu_available() else pb.SolverParameter.CPU
    return pb.SolverParameter(snapshot_prefix=net_name, solver_mode=mode, **RELEASE_TRAINING)


def train_net_of(param: pb.SolverParameter, solver_dir: str) -> tuple[str, pb.NetParameter, str]:
    """(field holding the embedded net, the train NetParameter, folder its relative paths start from)."""
    for field, embedded in NET_FIELDS.items():
        if param.HasField(embedded):
            return embedded, getattr(param, embedded), solver_dir
        if param.HasField(field):
            path = getattr(param, field)
            return embedded, read_net_param(path), os.path.dirname(os.path.abspath(path))
    raise me.MemnetError("the solver names no train net")


def anchor_data_sources(net_param: pb.NetParameter, net_dir: str) -> None:
    """Make HDF5Data sources absolute where they are found next to the net file (Caffe's cwd rule first)."""
    for layer in net_param.layer:
        if layer.type == "HDF5Data":
            found = resolve(layer.hdf5_data_param.source, net_dir)
            if os.path.exists(found):
                layer.hdf5_data_param.source = os.path.abspath(found)


def prepare_training_data(net_param: pb.NetParameter, args: argparse.Namespace) -> bool:
    """Apply --train-data / --batch-size to the HDF5Data layers the TRAIN phase uses.

    A layer whose source is the generated nets' placeholder (``data/train_list.txt``) and does not
    exist gets the built-in default SR set (built once from scikit-image's photos); any other
    missing source is an error.  Returns True if the default set is used.
    """
    train_view = pb.NetParameter()
    train_view.CopyFrom(net_param)
    filter_net(train_view, pb.NetState(phase=pb.TRAIN))
    used = {layer.name for layer in train_view.layer}
    layers = [layer for layer in net_param.layer if layer.type == "HDF5Data" and layer.name in used]
    if (args.train_data or args.batch_size) and not layers:
        raise me.MemnetError(f"net '{net_param.name}' has no HDF5Data layer in the TRAIN phase for --train-data / "
                             "--batch-size")
    uses_default = False
    for layer in layers:
        if args.train_data:
            layer.hdf5_data_param.source = os.path.abspath(args.train_data)
        elif not os.path.exists(layer.hdf5_data_param.source):
            if layer.hdf5_data_param.source != TRAIN_SOURCE:
                raise me.MemnetError(f"layer '{layer.name}': training data list '{layer.hdf5_data_param.source}' "
                                     "not found; make one with tools/make_training_data.py and pass --train-data")
            log.info("No training data at %s: using the built-in default SR set (built once from scikit-image's "
                     "photos; see README for the paper's 291-image set)", TRAIN_SOURCE)
            layer.hdf5_data_param.source = ensure_default_training_set()
            uses_default = True
        if args.batch_size:
            layer.hdf5_data_param.batch_size = args.batch_size
    return uses_default


def build_solver_param(args: argparse.Namespace) -> tuple[pb.SolverParameter, bool]:
    """The solver to run (the file's, or MemNet's released one) with the net embedded and the flags
    applied, and whether the built-in default training set is used."""
    path = args.solver or args.model
    if is_solver_file(path):
        param = read_solver(path)
        field, net_param, net_dir = train_net_of(param, os.path.dirname(os.path.abspath(path)))
    else:
        net_param, net_dir = read_net_param(path), os.path.dirname(os.path.abspath(path))
        param, field = paper_solver(net_param.name or "net"), "net_param"
    anchor_data_sources(net_param, net_dir)
    uses_default = prepare_training_data(net_param, args)
    for file_field, embedded in NET_FIELDS.items():
        param.ClearField(file_field)
    getattr(param, field).CopyFrom(net_param)
    for flag, field_name in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(param, field_name, value)
    if args.weights:
        param.weights.append(args.weights)
    return param, uses_default


def log_clipping(param: pb.SolverParameter, args: argparse.Namespace) -> None:
    """Say which gradient clipping ``param`` (from ``build_solver_param(args)``) uses, and why; a solver file
    whose clip_gradients keeps its stock meaning by default gets a warning naming the flag for the release's."""
    path, flag = args.solver or args.model, args.adjustable_clip
    solver_file = path if is_solver_file(path) else None
    file_sets_it = solver_file is not None and flag is None and param.HasField("adjustable_clip")
    clip, base_lr = float(param.clip_gradients), float(param.base_lr)
    if clip < 0:
        log.info("Gradient clipping: off (clip_gradients %g < 0)", clip)
        return
    if flag is not None:
        why = RELEASE_CLIPPING if flag else "--no-" + RELEASE_CLIPPING[2:]
    elif file_sets_it:
        why = f"adjustable_clip: {str(param.adjustable_clip).lower()} in {solver_file}, a memnet-engine field " \
              "that BVLC Caffe rejects"
    else:
        why = "the release's solver" if solver_file is None else f"the default for a solver file, {solver_file}"
    at_base_lr = f"{clip / base_lr:g} at the base lr {base_lr:g}" if base_lr else "unbounded at lr 0"
    if param.adjustable_clip:
        log.info("Gradient clipping: the MemNet release's adjustable clipping (%s): global L2 norm clipped at "
                 "clip_gradients / current lr (%s)", why, at_base_lr)
        return
    message = f"Gradient clipping: Caffe's stock clipping ({why}): global L2 norm clipped at {clip:g} at every lr"
    if flag is None and not file_sets_it and solver_file is not None:
        log.warning("%s.  The MemNet release's patched Caffe clips at clip_gradients / current lr (%s): add %s to "
                    "train as the release did", message, at_base_lr, RELEASE_CLIPPING)
    else:
        log.info("%s", message)


def gpu_list(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a GPU number or comma-separated list: {text!r}") from None
    if not ids or min(ids) < 0:
        raise argparse.ArgumentTypeError(f"GPU numbers must be >= 0: {text!r}")
    return ids


def choose_device(args: argparse.Namespace, param: pb.SolverParameter, world: World = World()) -> str:
    wants_gpu = args.device == "gpu" or args.gpu is not None
    gpu_id = rank_gpu(args.gpu, world) if (args.gpu is not None or world.distributed) else param.device_id
    if wants_gpu:
        if not gpu_available():
            raise me.MemnetError("--device gpu: no CUDA GPU is available (CuPy missing or no device)")
        return f"gpu:{gpu_id}"
    if args.device is None and param.solver_mode == pb.SolverParameter.GPU:
        if gpu_available():
            return f"gpu:{gpu_id}"
        log.warning("The solver asks for a GPU but none is available: training on the CPU")
    return "cpu"


def rank_gpu(ids: "list[int] | None", world: World) -> int:
    """This rank's GPU: from the --gpu list, else its local rank modulo the node's GPU count."""
    if ids:
        return ids[world.local_rank % len(ids)]
    if not gpu_available():
        return 0
    import cupy
    return world.local_rank % cupy.cuda.runtime.getDeviceCount()


# ---------------------------------------------------------------------------- output
class TqdmHandler(logging.Handler):
    """Echo log lines above the progress bar without breaking it (errors are printed once, by main)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def add_log_handler(handler: logging.Handler, quiet: bool = False) -> logging.Handler:
    """Send the engine's log records and Python warnings (glog format) to ``handler`` (only warnings and
    errors if ``quiet``)."""
    handler.setFormatter(GlogFormatter())
    if quiet:
        handler.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    return handler


def solver_settings_text(param: pb.SolverParameter) -> str:
    """The solver parameters for the log, with the embedded net shown by name only."""
    shown = pb.SolverParameter()
    shown.CopyFrom(param)
    names = []
    for field in NET_FIELDS.values():
        if shown.HasField(field):
            names.append(f"{field}: <net '{getattr(shown, field).name}'>")
            shown.ClearField(field)
    return to_text(shown) + "\n".join(names)


class IterationBar(tqdm):
    """A tqdm bar whose rate and ETA come from the last ``window`` iterations, not counting start-up
    and the first iteration (its one-time costs would inflate the estimate): '?' until two are done."""

    def __init__(self, *args, window: int = 20, **kwargs):
        self.iteration_ends: deque[float] = deque(maxlen=window + 1)
        super().__init__(*args, **kwargs)

    def update(self, n: int = 1) -> "bool | None":
        self.iteration_ends.append(time.perf_counter())
        return super().update(n)

    @property
    def format_dict(self) -> dict:
        values = super().format_dict
        values["rate"] = self.recent_rate()
        return values

    def recent_rate(self) -> float:
        """Iterations per second between the recent iteration ends; 0.0 (shown as '?') before two."""
        ends = self.iteration_ends
        lapse = ends[-1] - ends[0] if len(ends) > 1 else 0.0
        return (len(ends) - 1) / lapse if lapse > 0 else 0.0


def loss_description(net: me.Net) -> str:
    """What the solver's loss is: the net's one loss output, or the sum of its weighted loss outputs."""
    weights = {name: layer.loss(j) for layer, tops in zip(net.layers, net.top_names)
               for j, name in enumerate(tops) if layer.loss(j)}
    names = list(weights)
    if len(names) <= 1:
        return f"the loss output {names[0]}" if names else "the net's loss"
    shown = ", ".join(names if len(names) <= 3 else names[:2] + ["...", names[-1]])
    weighting = "" if set(weights.values()) == {1.0} else " times their loss_weight"
    return f"sum of the {len(names)} supervised losses{weighting}: {shown}"


class Progress:
    """A tqdm bar (loss, lr, it/s, ETA) fed by the solver's hooks, and the loss curve of the whole run (the
    display lines train.log holds from before a resume, then every iteration), redrawn at most every
    ``plot_every`` seconds and at the end."""

    def __init__(self, solver: me.SGDSolver, out: str, plot_every: float = 60.0):
        self.solver, self.png = solver, os.path.join(out, "loss_curve.png")
        self.title = f"{solver.net.name}: training loss\n= {loss_description(solver.net)}"
        self.curve = LossCurve()
        for iteration, loss in read_logged_losses(os.path.join(out, "train.log"), before=solver.iter):
            self.curve.add(iteration, loss)
        load_matplotlib()  # now, not at the first drawing, where a second Ctrl-C could break its import
        self.plot_every, self.drawn_at = plot_every, time.monotonic()
        self.bar = IterationBar(total=solver.param.max_iter, initial=solver.iter, desc=solver.net.name or "train",
                                unit="it", dynamic_ncols=True, file=sys.stderr)
        self.bar.set_postfix_str("first iteration running (slower than the next ones)")
        solver.iteration_hooks.append(self.on_iteration)

    def on_iteration(self, stats: IterationStats) -> None:
        self.curve.add(stats.iteration - 1, stats.loss)
        self.bar.set_postfix(loss=f"{stats.smoothed_loss:.4g}", lr=f"{stats.lr:.3g}", refresh=False)
        self.bar.update(1)
        if time.monotonic() - self.drawn_at >= self.plot_every:
            self.draw()

    def draw(self) -> None:
        """Redraw loss_curve.png; a failed write (a full disk) is a warning: the plot can be redrawn later."""
        try:
            with deferred_signals():  # a second Ctrl-C aborts after the drawing, not inside matplotlib
                self.curve.save_png(self.png, self.title, ylabel="loss")
        except OSError as ex:
            log.warning("cannot write %s: %s", self.png, ex.strerror or ex)
        self.drawn_at = time.monotonic()

    def close(self) -> None:
        self.bar.close()


class LogFile(logging.FileHandler):
    """train.log, appended to.  The first failed write (a full disk) is kept in ``error`` and calls
    ``on_error`` (the solver's request to snapshot and stop); later records are dropped, instead of
    logging's traceback for every one."""

    def __init__(self, path: str):
        super().__init__(path, encoding="utf-8")
        self.error: "BaseException | None" = None
        self.on_error = lambda: None

    def emit(self, record: logging.LogRecord) -> None:
        if self.error is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.error is None:
            self.error = sys.exc_info()[1]
            self.on_error()

    def failure(self) -> "str | None":
        """What went wrong writing the log, if anything did."""
        if self.error is None:
            return None
        return f"cannot write {self.baseFilename}: {getattr(self.error, 'strerror', None) or self.error}"


def folder_name(name: str) -> str:
    """``name`` (a net name or snapshot prefix from a file) as one path component: path separators and control
    characters become '_' and leading dots are dropped, so that '../../x' or '/abs/dir' stay inside --out and
    runs/."""
    safe = re.sub(r"[/\\:\x00-\x1f]", "_", name).lstrip(". ")
    if safe != name:
        log.warning("'%s' (from the net or solver file) is not a folder or file name: using '%s'", name, safe or "net")
    return safe or "net"


def write_preview(net: me.Net, out: str) -> None:
    """Restore the held-out photo with the trained weights; a net that cannot do it is only warned about."""
    path = os.path.join(out, "preview_sr_x3.png")
    log.info("Restoring a held-out photo (bicubic x3) for %s ...", path)
    try:
        result = write_sr_preview(net, path, scale=3)
    except (me.MemnetError, KeyError, ValueError) as ex:
        log.warning("No preview: this net cannot restore a photo (%s)", ex)
        return
    log.info("Preview %s: PSNR on Y, bicubic %.2f dB, restored %.2f dB (bicubic | restored | original)",
             path, result.psnr_bicubic, result.psnr_restored)


def check_resume_target(param: pb.SolverParameter, snapshot: str, max_iter_flag: "int | None") -> None:
    """--max-iter is the total number of iterations: resuming at or past it would train nothing."""
    done = read_solver_state(snapshot).iter
    if param.max_iter > done:
        return
    if max_iter_flag is None:
        given, hint = f"the solver's max_iter {param.max_iter}", f"pass --max-iter above {done}"
    else:
        more = max(max_iter_flag, 1)
        given, hint = f"--max-iter {max_iter_flag}", f"--max-iter {done + more} trains {more} more"
    raise me.MemnetError(f"{snapshot} is already at iteration {done}, and {given} counts all iterations, not how "
                         f"many more: nothing to train ({hint})")


# ---------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> int:
    """Run tools/train.py; returns the exit code (0 done, 75 stopped by a signal after a snapshot, 1 error,
    128 + N aborted by signal N); the failure message is printed here and written to train.log."""
    world = launched_world()
    if args.distributed and not world.distributed:
        world = mpi_world()
    handlers = [add_log_handler(TqdmHandler(), quiet=not world.is_root)]
    coordinator = solver = log_file = None
    prefix = ""
    try:
        param, uses_default = build_solver_param(args)
        net_name = folder_name(param.net_param.name or param.train_net_param.name or "net")
        out = args.out or os.path.join("runs", net_name)
        prefix = param.snapshot_prefix = os.path.join(out, folder_name(os.path.basename(param.snapshot_prefix))
                                                      if os.path.basename(param.snapshot_prefix) else net_name)
        if world.is_root:
            os.makedirs(out, exist_ok=True)
            log_file = LogFile(os.path.join(out, "train.log"))
            handlers.append(add_log_handler(log_file))
            tidy_output(out, prefix)
        if args.snapshot:
            check_resume_target(param, args.snapshot, args.max_iter)
        device = choose_device(args, param, world)
        log.info("Using device %s%s", device, f" on each of {world.size} ranks (data-parallel)"
                 if world.distributed else "")
        log_clipping(param, args)
        log.info("Initializing solver from parameters:\n%s", solver_settings_text(param))
        if world.distributed:
            coordinator = DataParallel(Communicator(world, device), check_every=args.check_weights_every)
            coordinator.share_seed(param)
        solver = me.SGDSolver(param, device=device, math=args.math)
        solver.signal_effects = {name: getattr(args, f"{name.lower()}_effect") for name in DEFAULT_EFFECTS}
        solver.keep_snapshots = args.keep_snapshots
        if coordinator is not None:
            coordinator.attach(solver)
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            coordinator.restore(solver, args.snapshot) if coordinator else solver.restore(args.snapshot)
            log.info("Resumed from %s at iteration %d (this log goes on from there)", args.snapshot, solver.iter)
        if not world.is_root:
            return run_follower(solver)
        log_file.on_error = solver.request_stop
        progress = Progress(solver, out, args.plot_every)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverging loss is reported once
                solver.solve()
        except KeyboardInterrupt:  # aborted: no drawing, the exit is immediate
            progress.close()
            raise
        except BaseException:
            progress.close()
            progress.draw()
            raise
        progress.close()
        progress.draw()
        if log_file.failure():
            raise me.MemnetError(f"{log_file.failure()}: training stopped at iteration {solver.iter}"
                                 f"{snapshot_note(prefix)}")
        state = os.path.join(out, f"{os.path.basename(prefix)}_iter_{solver.iter}.solverstate")
        if args.precise_bn and not solver.requested_early_exit:
            write_precise_bn_snapshot(solver.net, state[:-len(".solverstate")] + ".caffemodel", args.precise_bn)
        if args.preview if args.preview is not None else uses_default:
            if solver.requested_early_exit:
                log.info("Stopped early: skipping the preview")
            else:
                write_preview(solver.net, out)
        if solver.requested_early_exit:
            how = f"by {solver.stop_signal}" if solver.stop_signal else "by a signal to another rank"
            if solver.last_snapshot != state:  # snapshot_after_train: false
                log.info("stopped %s at iteration %d without a snapshot (snapshot_after_train is false)", how,
                         solver.iter)
                return 128 + int(getattr(signal, solver.stop_signal or "SIGTERM"))
            log.info("stopped %s at iteration %d after a snapshot; resume with: --snapshot %s", how, solver.iter, state)
            return EXIT_STOPPED
        log.info("done: %d iterations; snapshot %s; log %s; loss curve %s", solver.iter, state,
                 os.path.join(out, "train.log"), progress.png)
        return 0
    except BaseException as ex:
        failure = outcome(ex, solver, prefix, log_file)
        if failure is None:
            raise  # not a user's problem: a bug, shown with its traceback
        message, code = failure
        log.error("%s", message)  # into train.log (the console handler leaves errors to the print below)
        print(f"train.py: {message}", file=sys.stderr)
        if coordinator is not None and not isinstance(ex, (TrainingDiverged, WeightsDrifted)):
            log.error("rank %d failed (%s): stopping every rank", world.rank, type(ex).__name__)
            coordinator.comm.abort(1)  # the other ranks would wait for this one forever
        return code
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            for logger in LOGGERS:
                logging.getLogger(logger).removeHandler(handler)
            handler.close()


def tidy_output(out: str, prefix: str) -> None:
    """At start: complete the snapshot pair a killed run left half-written, then delete the temporary files of
    killed writers (snapshots, loss_curve.png, previews) in ``out``."""
    recover(prefix)
    removed = remove_stale_temps(out)
    if removed:
        log.info("Removed %d temporary file(s) left in %s by a stopped run: %s", len(removed), out,
                 ", ".join(removed[:3]) + (", ..." if len(removed) > 3 else ""))


def snapshot_note(prefix: str) -> str:
    """'; the newest snapshot is X (resume with --snapshot X)', or that there is none, for prefix's folder."""
    pairs = [i for i, found in snapshot_iterations(prefix).items() if len(found) == 2] if prefix else []
    if not pairs:
        return "; no snapshot was written"
    state = f"{prefix}_iter_{max(pairs)}.solverstate"
    return f"; the newest snapshot is {state} (resume with --snapshot {state})"


def outcome(ex: BaseException, solver, prefix: str, log_file: "LogFile | None") -> "tuple[str, int] | None":
    """(the one line a failed run ends with, its exit code); None for an exception that is a bug."""
    if isinstance(ex, KeyboardInterrupt):
        name = ex.args[0] if ex.args and isinstance(ex.args[0], str) else "SIGINT"
        code = 128 + int(getattr(signal, name, signal.SIGINT))
        if solver is None:
            return f"interrupted ({name}) during start-up: nothing was trained", code
        return f"aborted ({name}) at iteration {solver.iter}{snapshot_note(prefix)}", code
    log_failure = log_file.failure() if log_file is not None else None
    if isinstance(ex, MemoryError):
        message = f"error: out of memory ({type(ex).__name__} {ex}); try a smaller --batch-size"
    elif isinstance(ex, OSError):
        message = f"error: {ex.filename or ''}: {ex.strerror or ex}"
    elif isinstance(ex, me.MemnetError):
        message = f"error: {ex}{snapshot_note(prefix) if isinstance(ex, SnapshotError) else ''}"
    else:
        return None
    if log_failure and log_failure not in message:
        message = f"error: {log_failure}; then {message.removeprefix('error: ')}"
    return message, 1


def run_follower(solver: me.SGDSolver) -> int:
    """A rank other than 0: train in step with rank 0, which logs, draws and snapshots."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        solver.solve()
    return EXIT_STOPPED if solver.requested_early_exit else 0


def mpi_world() -> World:
    """The World as MPI itself reports it (for --distributed under a launcher we do not recognise)."""
    from ..core.distributed.comm import mpi_module
    comm = mpi_module().COMM_WORLD
    local = comm.Split_type(mpi_module().COMM_TYPE_SHARED).Get_rank()
    return World(comm.Get_rank(), comm.Get_size(), local)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        with warnings.catch_warnings():
            if args.strict:
                warnings.simplefilter("error", NonFiniteWeights)
            return train(args)
    except KeyboardInterrupt:  # before train() took over (parsing the command line)
        print("train.py: interrupted during start-up: nothing was trained", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
