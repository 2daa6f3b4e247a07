"""What restore and evaluate share: the --device option and loading a deploy net, with clear
messages for the files people give by mistake (a training net, a .solverstate as weights)."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from google.protobuf.message import DecodeError

from ..core.backend import GPU, parse_device
from ..core.errors import MemnetError, NetError, NonFiniteWeights, WeightsError
from ..core.net import TEST, Net
from ..core.net_param import filter_net
from ..core.proto import caffe_pb2 as pb
from ..core.prototxt import read_net_param
from ..core.weights import copy_weights_from_file
from ..weights import model_and_weights

DATA_LAYER_TYPES = ("HDF5Data", "Data", "ImageData", "MemoryData", "WindowData", "DummyData")
GPU_INSTALL = "pip install -e '.[gpu]' (CUDA 12) or -e '.[gpu-cuda13]' (CUDA 13)"


def device_argument(text: str) -> str:
    """argparse type of --device: 'cpu', 'gpu' or 'gpu:ID' (any case)."""
    try:
        parse_device(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': use cpu, gpu or gpu:ID (e.g. gpu:1)") from None
    return text.lower()


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", type=device_argument, metavar="cpu|gpu[:ID]",
                        help="where the net runs (default cpu); gpu needs CuPy: " + GPU_INSTALL)


def gpu_available() -> bool:
    """True if CuPy is installed and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return False


def check_device(device: str) -> None:
    """A GPU device where there is none is an error that says how to get one."""
    if parse_device(device)[0] == GPU and not gpu_available():
        raise MemnetError(f"--device {device}: no CUDA GPU is available (CuPy missing or no device); to use one, "
                          + GPU_INSTALL)


def check_deploy_net(path: str) -> None:
    """A training net (data layers, losses) given where a deploy net is needed gets its remedy named."""
    param = read_net_param(path)
    filter_net(param, pb.NetState(phase=pb.TEST))
    training = [f"{layer.type} layer '{layer.name}'" for layer in param.layer
                if layer.type in DATA_LAYER_TYPES or layer.type.endswith("Loss")]
    if training:
        stem = os.path.splitext(os.path.basename(path))[0]
        raise NetError(f"{path} is a training net ({', '.join(training[:2])}{', ...' if len(training) > 2 else ''})"
                       f"; restoring needs its deploy net (one image in, one out), made by: memnet-make-net "
                       f"--deploy --from-train {path} -o {stem}_deploy.prototxt")


def check_weights(path: str) -> None:
    """A .solverstate given as weights gets the .caffemodel it points to named."""
    if not path.endswith(".solverstate"):
        return
    model = os.path.splitext(path)[0] + ".caffemodel"
    try:
        state = pb.SolverState()
        with open(path, "rb") as f:
            state.ParseFromString(f.read())
        model = state.learned_net or model
    except (OSError, DecodeError):  # unreadable or not a solver state: name the usual neighbour
        pass
    raise WeightsError(f"{path} is a solver state (iteration and momentum, for resuming training), not weights: "
                       f"use the .caffemodel written next to it: --weights {model}")


def add_strict_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true",
                        help="NaN or infinite values in the weights are an error, not a warning")


def load_deploy_net(model: str, weights: str, device: str, strict: bool = False) -> Net:
    """The deploy net ``model`` with ``weights`` on ``device``, for restoring images: every layer with
    parameters must be filled from ``weights``; NaN or infinite weights are a warning (``strict``: an error)."""
    check_device(device)
    check_weights(weights)
    check_deploy_net(model)
    net = Net(model, TEST, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error" if strict else "always", NonFiniteWeights)
        copy_weights_from_file(net, weights, require_all=True)
    for warning in caught:
        print(f"warning: {warning.message} (--strict makes this an error)", file=sys.stderr)
    return net


def load_task_net(task: str, model: "str | None", weights: "str | None", device: str, strict: bool = False) -> Net:
    """The user's deploy net and weights, or the shipped demo model of ``task`` when neither is given (said on
    stderr)."""
    model, weights, note = model_and_weights(task, model, weights)
    if note:
        print(note, file=sys.stderr)
    return load_deploy_net(model, weights, device, strict)
