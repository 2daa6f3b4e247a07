"""Recompute the BatchNorm statistics of a .caffemodel for its weights (precise BN), as a new .caffemodel.

Caffe's BatchNorm stores running averages (fraction 0.999) that lag the weights after a short run;
this runs K training batches through the TRAIN net with frozen weights and stores, for every
BatchNorm layer, the exact mean and unbiased variance of everything it saw in those batches
(pooled over all K batches), as Caffe's three blobs with scale factor 1.  The output is an
ordinary .caffemodel (every other blob copied unchanged) for the train or the deploy net.

    memnet-precise-bn NET_train.prototxt model.caffemodel -o model_precise_bn.caffemodel
    memnet-precise-bn NET_train.prototxt model.caffemodel -o out.caffemodel --train-data data/sr291/train.txt
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import memnet_engine as me
from ..core.precise_bn import precise_bn
from ..core.prototxt import read_net_param
from .help_format import PlainHelpFormatter

log = logging.getLogger("memnet_engine.precise_bn")
DEFAULT_BATCHES = 100


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="memnet-precise-bn", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=PlainHelpFormatter)
    p.add_argument("net", metavar="NET_train.prototxt", help="the train net (its HDF5Data layer gives the batches)")
    p.add_argument("weights", metavar="WEIGHTS.caffemodel", help="the weights whose BatchNorm statistics to recompute")
    p.add_argument("-o", "--output", required=True, metavar="OUT.caffemodel", help="the new .caffemodel")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES, metavar="K",
                   help="training batches to pool the statistics over (default %(default)s)")
    p.add_argument("--train-data", metavar="LIST", help="text file listing the .h5 training files (HDF5Data source; "
                                                        "default: the net's, or the built-in set for the generated "
                                                        "nets' placeholder)")
    p.add_argument("--batch-size", type=int, metavar="N", help="HDF5Data batch size (default: the net's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data layer's shuffling (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or gpu[:ID] (default %(default)s)")
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return args


def recompute(net: me.Net, batches: int) -> str:
    """Run precise BN on ``net`` over ``batches`` of its data layers; returns a one-line summary for the log."""
    start = time.time()
    stats = precise_bn(net, batches)
    per_channel = next(iter(stats.values())).count
    return (f"precise BN: statistics of {len(stats)} BatchNorm layers recomputed over {batches} batches "
            f"(first layer: {per_channel} values per channel) in {time.time() - start:.1f} s")


def write_precise_bn_snapshot(net: me.Net, model_path: str, batches: int) -> str:
    """tools/train.py --precise-bn: recompute ``net``'s statistics and save them next to the final snapshot
    as ``<snapshot>_precise_bn.caffemodel`` (the snapshot itself stays as Caffe wrote it, for exact resume)."""
    log.info("%s", recompute(net, batches))
    path = model_path[:-len(".caffemodel")] + "_precise_bn.caffemodel"
    net.save(path)
    log.info("Weights with precise BatchNorm statistics: %s", path)
    return path


def main(argv=None) -> int:
    from .train import anchor_data_sources, prepare_training_data

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        net_param = read_net_param(args.net)
        anchor_data_sources(net_param, os.path.dirname(os.path.abspath(args.net)))
        prepare_training_data(net_param, args)
        me.set_random_seed(args.seed)
        net = me.Net(net_param, phase=me.TRAIN, weights=args.weights, device=args.device)
        if not any(layer.type == "HDF5Data" for layer in net.layers):
            raise me.MemnetError(f"{args.net}: no HDF5Data layer in the TRAIN phase: give the train net (a deploy "
                                 "net has no training data to compute the statistics on)")
        print(recompute(net, args.batches), file=sys.stderr)
        net.save(args.output)
    except me.MemnetError as ex:
        print(f"memnet-precise-bn: error: {ex}", file=sys.stderr)
        return 1
    except OSError as ex:
        print(f"memnet-precise-bn: error: {ex.filename or ''}: {ex.strerror or ex}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
