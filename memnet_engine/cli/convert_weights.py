"""Convert MemNet / Caffe weights between .caffemodel, Caffe-named .npz, a PyTorch-style state dict and ONNX.

Examples:
    python tools/convert_weights.py model.caffemodel model.npz             # "<layer>/<i>" -> array
    python tools/convert_weights.py model.npz model.caffemodel             # back (loads in Caffe and Net.copy_from)
    python tools/convert_weights.py model.npz model.caffemodel --net prototxt/memnet_m6r6_deploy.prototxt
    python tools/convert_weights.py model.caffemodel model.pt              # torch.save state dict (needs torch)
    python tools/convert_weights.py model.caffemodel model_torch.npz --torch
    python tools/convert_weights.py model.caffemodel model.onnx --net prototxt/memnet_m6r6_deploy.prototxt
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.convert import __doc__ as MAPPING
from ..core.convert import caffemodel_from_arrays, read_arrays, save_npz, save_torch, torch_state_dict
from ..core.errors import MemnetError, WeightsError
from ..core.net import TEST, Net
from ..core.onnx_export import OPSET, export_onnx
from ..core.prototxt import read_net_param
from ..core.weights import copy_weights, write_binary_atomic
from .help_format import PlainHelpFormatter

INPUTS = (".caffemodel", ".npz")
OUTPUTS = (".caffemodel", ".npz", ".pt", ".onnx")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert weights between a binary .caffemodel, an .npz of Caffe-named arrays "
                    "('<layer>/<i>'), and a PyTorch-style state dict (.pt via torch, or .npz with --torch); "
                    f"or write an ONNX model (opset {OPSET}, dynamic height and width) of a deploy net with "
                    "these weights (.onnx, needs --net and the onnx package).  The format is chosen by the file "
                    "extensions.",
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + MAPPING, formatter_class=PlainHelpFormatter)
    parser.add_argument("input", help="weights to read: .caffemodel or Caffe-named .npz")
    parser.add_argument("output", help="file to write: .caffemodel, .npz, .pt or .onnx (written atomically)")
    parser.add_argument("--net", metavar="PROTOTXT",
                        help="the net's prototxt: layer definitions for a .caffemodel written from an .npz (as "
                             "Caffe's snapshots carry), layer types / shared param names for a torch export "
                             "from an .npz, and the deploy net an .onnx holds (required there)")
    parser.add_argument("--torch", action="store_true",
                        help="with an .npz output: torch-style names instead of '<layer>/<i>' (implied by .pt)")
    return parser


def extension(path: str, allowed: tuple[str, ...]) -> "str | None":
    ext = os.path.splitext(path)[1].lower()
    return ext if ext in allowed else None


def convert(args: argparse.Namespace) -> str:
    """Do the conversion; returns a one-line summary."""
    out_ext = extension(args.output, OUTPUTS)
    arrays, model = read_arrays(args.input)
    if out_ext == ".onnx":
        return write_onnx(arrays, args)
    net = read_net_param(args.net) if args.net else None
    if out_ext == ".pt" or args.torch:
        definitions = net.layer if net is not None else model.layer if model is not None else None
        if definitions is None:
            raise WeightsError(f"{args.input}: an .npz carries no layer types; pass the net's prototxt with --net")
        state = torch_state_dict(arrays, definitions, args.input)
        (save_torch if out_ext == ".pt" else save_npz)(args.output, state)
        return f"wrote {args.output}: {len(state)} torch-style tensors from {len(arrays)} Caffe blobs"
    if out_ext == ".caffemodel":
        write_binary_atomic(args.output, caffemodel_from_arrays(arrays, args.input, net))
    else:
        save_npz(args.output, arrays)
    return f"wrote {args.output}: {len(arrays)} Caffe blobs"


def write_onnx(arrays, args: argparse.Namespace) -> str:
    """The deploy net ``--net`` with every parameter from ``arrays``, exported to ONNX."""
    net = Net(args.net, phase=TEST)
    loaded = set(copy_weights(net, caffemodel_from_arrays(arrays, args.input), args.input))
    missing = [name for name in net.params if name not in loaded]
    if missing:
        raise WeightsError(f"{args.input} has no weights for {len(missing)} layer(s) of net '{net.name}' (first: "
                           f"'{missing[0]}'); is it the right --net?")
    model = export_onnx(net, args.output)
    return (f"wrote {args.output}: ONNX opset {OPSET}, {len(model.graph.node)} nodes, input(s) "
            f"{', '.join(net.inputs)} -> output(s) {', '.join(net.outputs)} (dynamic batch, height and width)")


def main(argv: "list[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if extension(args.input, INPUTS) is None:
        parser.error(f"input must end in {' or '.join(INPUTS)}: {args.input}")
    out_ext = extension(args.output, OUTPUTS)
    if out_ext is None:
        parser.error(f"output must end in {', '.join(OUTPUTS)}: {args.output}")
    if args.torch and out_ext != ".npz":
        parser.error("--torch selects torch-style names for an .npz output; a .pt is always torch-style")
    if out_ext == ".onnx" and not args.net:
        parser.error("an .onnx output needs the deploy net: --net DEPLOY.prototxt")
    if args.net and out_ext == ".npz" and not args.torch:
        parser.error("--net is used for a .caffemodel output or a torch-style export, not a Caffe-named .npz")
    try:
        print(convert(args), file=sys.stderr)
    except MemnetError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 1
    except OSError as ex:
        print(f"error: cannot write {args.output}: {ex.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
