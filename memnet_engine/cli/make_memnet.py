"""Generate MemNet prototxts (Tai et al., ICCV 2017) with the original release's layer, blob and param names.

Examples:
    python tools/make_memnet.py -M 6 -R 6 -o my_m6r6.prototxt            # train net, multi-supervised
    python tools/make_memnet.py -M 6 -R 6 --deploy -o my_m6r6_deploy.prototxt
    python tools/make_memnet.py -M 6 -R 6 --basic --nl -o m6r6_basic_nl.prototxt
    python tools/make_memnet.py --deploy --from-train runs/my_net.prototxt -o my_net_deploy.prototxt
    python tools/make_memnet.py --standard prototxt                      # rewrite every committed file
    python tools/make_memnet.py --check prototxt                         # exit 1 if they drifted
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import MemnetError
from ..core.net_param import deploy_from_train
from ..core.proto import caffe_pb2 as pb
from ..core.prototxt import read_net_param
from .help_format import PlainHelpFormatter
from ..memnet.models import MemNetConfig, conv_depth, memnet_deploy_net, memnet_train_net
from ..memnet.models.standard import (DEPLOY_INPUT_SHAPE, PAPER_BATCH_SIZE, RELEASE_BATCH_SIZES, TRAIN_SOURCE,
                                      default_batch_size, describe, net_text, standard_files, write_text_atomic)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a MemNet .prototxt: M memory blocks of R recursions with C channels, named exactly "
                    "as the original Caffe release (conv01_01_a sharing conv01_wa/conv01_ba, concat01, "
                    "conv_transition_01, conv_end_01 sharing Recon_w/Recon_b, HR_recovery_01, ...), so the "
                    "release's weights load by name.  Depth = 1 + M(2R+1) + 1 (M6R6: 80, M10R10: 212).",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=PlainHelpFormatter)
    net = parser.add_argument_group("network")
    net.add_argument("-M", "--blocks", type=int, default=6, help="memory blocks (default: 6)")
    net.add_argument("-R", "--recursions", type=int, default=6, help="recursions per block (default: 6)")
    net.add_argument("-C", "--channels", type=int, default=64, help="feature channels (default: 64)")
    net.add_argument("--basic", action="store_true",
                     help="basic MemNet: one reconstruction from the last block (default: multi-supervised, "
                          "a reconstruction and loss per block plus their learned weighted sum)")
    net.add_argument("--nl", action="store_true",
                     help="ablation NL: no long-term connections (gates see only their block's recursions)")
    net.add_argument("--ns", action="store_true",
                     help="ablation NS: no short-term connections (gates see the earlier blocks and only "
                          "the last recursion)")
    net.add_argument("--name", help="net name (default: the release's style, e.g. MemNet_M6R6_80C64)")
    phase = parser.add_argument_group("train net (default) or deploy net")
    phase.add_argument("--deploy", action="store_true",
                       help="inference net: legacy 'input: \"data\"' + input_dim, no label and no losses")
    phase.add_argument("--from-train", metavar="TRAIN.prototxt",
                       help="with --deploy: the deploy version of this training net (any net: its data layers "
                            "become one input, its losses are dropped) instead of a generated one")
    phase.add_argument("--input-shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                       help=f"deploy input dims (default: {' '.join(map(str, DEPLOY_INPUT_SHAPE))})")
    phase.add_argument("--source", help=f"train: HDF5Data list file (default: {TRAIN_SOURCE})")
    release = ", ".join(f"M{m}R{r}: {n}" for (m, r), n in RELEASE_BATCH_SIZES.items())
    phase.add_argument("--batch-size", type=int,
                       help=f"train: batch size (default: the release's, {release}; the paper's {PAPER_BATCH_SIZE} "
                            "for any other M, R)")
    phase.add_argument("--no-shuffle", action="store_true", help="train: read the HDF5 files in list order")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", help="file to write (default: standard output)")
    out.add_argument("--standard", metavar="DIR",
                     help="write every committed model file (train/deploy nets and memnet_solver.prototxt) to DIR")
    out.add_argument("--check", metavar="DIR",
                     help="compare DIR's model files with what this generator writes; exit 1 on any difference")
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.deploy and (args.source or args.batch_size is not None or args.no_shuffle):
        parser.error("--source, --batch-size and --no-shuffle describe a train net; drop them or --deploy")
    if not args.deploy and (args.input_shape or args.from_train):
        parser.error("--input-shape and --from-train describe a deploy net; add --deploy")
    if (args.standard or args.check) and (args.output or args.from_train):
        parser.error("--standard/--check write or read a whole folder; drop --output and --from-train")


def write_standard(folder: str) -> None:
    for name, text in standard_files().items():
        write_text_atomic(os.path.join(folder, name), text)
        print(f"wrote {os.path.join(folder, name)}", file=sys.stderr)


def check_standard(folder: str) -> int:
    stale = []
    for name, text in standard_files().items():
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as f:
                same = f.read() == text
        except OSError:
            same = False
        if not same:
            stale.append(path)
    for path in stale:
        print(f"differs from the generator (or is missing): {path}", file=sys.stderr)
    if stale:
        print("regenerate with: python tools/make_memnet.py --standard " + folder, file=sys.stderr)
    return 1 if stale else 0


def main(argv: "list[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.check:
        return check_standard(args.check)
    try:
        if args.standard:
            write_standard(args.standard)
        else:
            write_net(parser, args, argv)
    except OSError as ex:
        print(f"error: cannot write {args.output or args.standard}: {ex.strerror}", file=sys.stderr)
        return 1
    except MemnetError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 1
    return 0


def deploy_of_train_net(path: str, input_shape: "tuple[int, ...]") -> pb.NetParameter:
    """The deploy net of the training net in ``path``: the first data top becomes its input."""
    train = read_net_param(path)
    data = next((layer for layer in train.layer if layer.type.endswith("Data") and layer.top), None)
    if data is None:
        raise MemnetError(f"{path}: no data layer, so no input to give the deploy net (is it a deploy net already?)")
    return deploy_from_train(train, {data.top[0]: tuple(input_shape)})


def write_net(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: "list[str] | None") -> None:
    if args.from_train:
        net = deploy_of_train_net(args.from_train, args.input_shape or DEPLOY_INPUT_SHAPE)
        net.name = args.name or net.name
        write_net_text(net, [f"Deploy net of {args.from_train}."], args, argv)
        return
    try:
        config = MemNetConfig(args.blocks, args.recursions, args.channels, multi_supervised=not args.basic,
                              long_term=not args.nl, short_term=not args.ns)
        if args.deploy:
            net = memnet_deploy_net(config, input_shape=args.input_shape or DEPLOY_INPUT_SHAPE, name=args.name)
        else:
            batch_size = default_batch_size(config) if args.batch_size is None else args.batch_size
            net = memnet_train_net(config, source=args.source or TRAIN_SOURCE, batch_size=batch_size,
                                   shuffle=not args.no_shuffle, name=args.name)
    except ValueError as ex:
        parser.error(str(ex))
    write_net_text(net, [f"{describe(config)}: {'deploy' if args.deploy else 'train'} net."], args, argv)


def write_net_text(net: pb.NetParameter, header: list[str], args: argparse.Namespace,
                   argv: "list[str] | None") -> None:
    command = "python tools/make_memnet.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = net_text(net, header + [f"Generated by: {command}"])
    if args.output:
        write_text_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    print(f"{'wrote ' + args.output if args.output else 'net'}: '{net.name}', {len(net.layer)} layers, "
          f"depth {conv_depth(net)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
