#!/usr/bin/env python3
"""Train a Caffe net with memnet-engine, like `caffe train`.

    python tools/train.py SOLVER.prototxt              # a Caffe solver file
    python tools/train.py NET_train.prototxt           # a net: trained with MemNet's released solver
    python tools/train.py SOLVER.prototxt --snapshot runs/x/x_iter_10000.solverstate   # resume

Given a net instead of a solver, the settings of the original MemNet release are used
(caffe_files/*/MemNet_*_solver.prototxt of tyshiwo/MemNet: base_lr 0.1, momentum 0.9,
weight_decay 1e-4, lr_policy step, gamma 0.1, stepsize 200000, clip_gradients 0.01 with the
adjustable clipping of its patched Caffe, display 10000, snapshot 10000, max_iter 20000000);
the solver-setting flags override them (and a solver file's settings).

Snapshots (``<prefix>_iter_N.caffemodel`` / ``.solverstate``), ``train.log`` (Caffe's glog format,
readable by Caffe's tools/extra/parse_log.py) and ``loss_curve.png`` go to ``--out``.
Ctrl-C snapshots and stops; resume with ``--snapshot``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from tqdm import tqdm

import memnet_engine as me
from ..core.layers.hdf5_data import resolve
from ..memnet.data import ensure_default_training_set
from ..memnet.models.standard import TRAIN_SOURCE
from ..core.net_param import filter_net
from ..memnet.preview import write_sr_preview
from ..core.prototxt import read_net_param, read_text_file, to_text
from ..core.solver import IterationStats, read_solver
from .precise_bn import write_precise_bn_snapshot
from .training_log import GlogFormatter, LossCurve, read_logged_losses

pb = me.caffe_pb2
log = logging.getLogger("memnet_engine.train")

# The solver of the original MemNet release (tyshiwo/MemNet, caffe_files/MemNet_M6R6_80C64 and
# MemNet_M10R10_212C64 use the same one), with its patched Caffe's adjustable clipping switched on.
PAPER_SOLVER = dict(base_lr=0.1, momentum=0.9, weight_decay=0.0001, lr_policy="step", gamma=0.1, stepsize=200000,
                    clip_gradients=0.01, adjustable_clip=True, display=10000, max_iter=20000000, snapshot=10000)
NET_FIELDS = {"net": "net_param", "train_net": "train_net_param"}
OVERRIDES = {"base_lr": "base_lr", "momentum": "momentum", "weight_decay": "weight_decay", "lr_policy": "lr_policy",
             "gamma": "gamma", "stepsize": "stepsize", "clip_gradients": "clip_gradients",
             "adjustable_clip": "adjustable_clip", "snapshot_every": "snapshot", "display": "display",
             "max_iter": "max_iter", "seed": "random_seed"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", metavar="SOLVER_OR_NET.prototxt",
                    help="a solver .prototxt, or a net .prototxt to train with MemNet's released solver settings")
    ap.add_argument("--solver", help="the solver .prototxt (instead of the positional argument)")
    ap.add_argument("--weights", help="fine-tune from these .caffemodel weights (comma-separated for several)")
    ap.add_argument("--snapshot", help="resume from this .solverstate")
    ap.add_argument("--out", help="folder for snapshots, train.log and loss_curve.png (default: runs/<net name>)")
    ap.add_argument("--device", choices=["cpu", "gpu"],
                    help="where to train (default: the solver's solver_mode if that device is available, else cpu)")
    ap.add_argument("--gpu", type=int, metavar="ID", help="GPU number (implies --device gpu)")
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
    solver.add_argument("--adjustable-clip", action=argparse.BooleanOptionalAction, default=None,
                        help="MemNet's adjustable clipping: threshold = clip_gradients / current lr (on)")
    solver.add_argument("--snapshot-every", type=int, metavar="N", help="snapshot every N iterations (10000)")
    solver.add_argument("--display", type=int, metavar="N", help="log the loss every N iterations (10000)")
    solver.add_argument("--seed", type=int, help="random seed (Caffe's random_seed): weight fillers and data "
                             "shuffling, so one seed repeats a run exactly on the CPU (default: unseeded)")
    args = ap.parse_args(argv)
    if bool(args.model) == bool(args.solver):
        ap.error("give one SOLVER_OR_NET.prototxt (positional or --solver)")
    if args.weights and args.snapshot:
        ap.error("give --snapshot to resume or --weights to fine-tune, not both")
    if args.precise_bn is not None and args.precise_bn < 1:
        ap.error("--precise-bn must be at least 1 (batches)")
    for name in ("batch_size", "max_iter", "stepsize", "snapshot_every", "display"):
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
    """MemNet's released solver (on the GPU when there is one)."""
    mode = pb.SolverParameter.GPU if gpu_available() else pb.SolverParameter.CPU
    return pb.SolverParameter(snapshot_prefix=net_name, solver_mode=mode, **PAPER_SOLVER)


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


def choose_device(args: argparse.Namespace, param: pb.SolverParameter) -> str:
    wants_gpu = args.device == "gpu" or args.gpu is not None
    gpu_id = args.gpu if args.gpu is not None else param.device_id
    if wants_gpu:
        if not gpu_available():
            raise me.MemnetError("--device gpu: no CUDA GPU is available (CuPy missing or no device)")
        return f"gpu:{gpu_id}"
    if args.device is None and param.solver_mode == pb.SolverParameter.GPU:
        if gpu_available():
            return f"gpu:{gpu_id}"
        log.warning("The solver asks for a GPU but none is available: training on the CPU")
    return "cpu"


def gpu_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return False


# ---------------------------------------------------------------------------- output
class TqdmHandler(logging.Handler):
    """Echo log lines above the progress bar without breaking it (errors are printed once, by main)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def add_log_handler(handler: logging.Handler) -> logging.Handler:
    """Send the engine's log records (glog format) to ``handler``."""
    handler.setFormatter(GlogFormatter())
    root = logging.getLogger("memnet_engine")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
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


class Progress:
    """A tqdm bar (loss, lr, it/s) fed by the solver's hooks, and the loss curve redrawn at each snapshot."""

    def __init__(self, solver: me.SGDSolver, out: str):
        self.solver, self.png = solver, os.path.join(out, "loss_curve.png")
        self.title = f"{solver.net.name}: training loss"
        self.curve = LossCurve()
        for iteration, loss in read_logged_losses(os.path.join(out, "train.log"), before=solver.iter):
            self.curve.add(iteration, loss)
        self.bar = tqdm(total=solver.param.max_iter, initial=solver.iter, desc=solver.net.name or "train",
                        unit="it", dynamic_ncols=True, file=sys.stderr)
        solver.iteration_hooks.append(self.on_iteration)
        solver.snapshot_hooks.append(lambda model, state: self.draw())

    def on_iteration(self, stats: IterationStats) -> None:
        self.curve.add(stats.iteration - 1, stats.loss)
        self.bar.set_postfix(loss=f"{stats.smoothed_loss:.4g}", lr=f"{stats.lr:.3g}", refresh=False)
        self.bar.update(1)

    def draw(self) -> None:
        self.curve.save_png(self.png, self.title)

    def close(self) -> None:
        self.bar.close()


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


# ---------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> int:
    handlers = [add_log_handler(TqdmHandler())]
    try:
        param, uses_default = build_solver_param(args)
        net_name = param.net_param.name or param.train_net_param.name or "net"
        out = args.out or os.path.join("runs", net_name)
        param.snapshot_prefix = os.path.join(out, os.path.basename(param.snapshot_prefix) or net_name)
        os.makedirs(out, exist_ok=True)
        handlers.append(add_log_handler(logging.FileHandler(os.path.join(out, "train.log"), encoding="utf-8")))
        device = choose_device(args, param)
        log.info("Using device %s", device)
        log.info("Initializing solver from parameters:\n%s", solver_settings_text(param))
        solver = me.SGDSolver(param, device=device)
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        progress = Progress(solver, out)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverging loss is reported once
                solver.solve()
        finally:
            progress.close()
            progress.draw()
        state = os.path.join(out, f"{os.path.basename(param.snapshot_prefix)}_iter_{solver.iter}.solverstate")
        if args.precise_bn and not solver.requested_early_exit:
            write_precise_bn_snapshot(solver.net, state[:-len(".solverstate")] + ".caffemodel", args.precise_bn)
        if args.preview if args.preview is not None else uses_default:
            write_preview(solver.net, out)
        if solver.requested_early_exit:
            print(f"stopped at iteration {solver.iter}; resume with: --snapshot {state}", file=sys.stderr)
        else:
            print(f"done: {solver.iter} iterations; snapshot {state}; log {os.path.join(out, 'train.log')}; "
                  f"loss curve {progress.png}", file=sys.stderr)
        return 0
    except me.MemnetError as ex:
        log.error("%s", ex)
        raise
    finally:
        root = logging.getLogger("memnet_engine")
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except me.MemnetError as ex:
        print(f"train.py: error: {ex}", file=sys.stderr)
        return 1
    except OSError as ex:
        print(f"train.py: error: {ex.filename or ''}: {ex.strerror or ex}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: aborted (no snapshot written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
