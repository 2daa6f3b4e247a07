"""Partial weights that start a multi-supervised MemNet as the identity on its input (bicubic, for SR).

With the release's fillers a multi-supervised MemNet starts far from its input: the M output weights
(``weight_output_end_*``, Scale layers without a filler) are Caffe's default 1, so the output is
M times the input plus M random reconstructions, and the first hundreds of updates only undo that.
These weights set the output weights to 1/M and the shared reconstruction convolution
(``conv_end_01``, or the basic net's ``conv_end_<M>``: ``Recon_w`` / ``Recon_b``) to zero; every
other layer keeps its random initialisation, because Caffe copies weights by layer name and leaves
the others alone.  Loaded with ``--weights`` the net starts exactly at its input (bicubic, for SR),
so any update that lowers the loss is an improvement over bicubic (as zero-initialised residual
branches in Fixup / ReZero).

    python -m memnet_engine.weights.start -M 6 -C 64 -o memnet_m6r6_bicubic_start.caffemodel
    python -m memnet_engine.weights.start -M 2 -C 32 --basic -o m2r2c32_basic_start.caffemodel
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ..core.proto import caffe_pb2 as pb
from ..core.weights import array_to_blob_proto, write_binary_atomic


def bicubic_start(blocks: int, channels: int, basic: bool = False) -> pb.NetParameter:
    """The partial weights for a MemNet of ``blocks`` blocks and ``channels`` channels: multi-supervised, or
    ``basic`` (one reconstruction, ``conv_end_<blocks>``, after the last block)."""
    kind = "basic" if basic else "multi-supervised"
    net = pb.NetParameter(name=f"identity start of a {kind} MemNet M{blocks} C{channels}")
    for m in range(1, 0 if basic else blocks + 1):
        layer = net.layer.add(name=f"weight_output_end_{m:02d}", type="Scale")
        array_to_blob_proto(np.full((1,), 1.0 / blocks, np.float32), layer.blobs.add())
    recon = net.layer.add(name=f"conv_end_{blocks if basic else 1:02d}", type="Convolution")
    array_to_blob_proto(np.zeros((1, channels, 3, 3), np.float32), recon.blobs.add())
    array_to_blob_proto(np.zeros((1,), np.float32), recon.blobs.add())
    return net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m memnet_engine.weights.start", description=__doc__.split("\n\n")[0])
    p.add_argument("-M", "--blocks", type=int, default=6, help="memory blocks (default %(default)s)")
    p.add_argument("-C", "--channels", type=int, default=64, help="feature channels (default %(default)s)")
    p.add_argument("--basic", action="store_true", help="the basic MemNet (make_memnet.py --basic)")
    p.add_argument("-o", "--output", required=True, help="the .caffemodel to write")
    args = p.parse_args(argv)
    write_binary_atomic(args.output, bicubic_start(args.blocks, args.channels, args.basic))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
