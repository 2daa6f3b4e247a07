#!/usr/bin/env python3
"""Data-parallel scaling of a MemNet training step: K = 1, 2, ... ranks under mpiexec.

Each rank trains on its own random batch (an Input layer, so no disk I/O); the gradient all-reduce
(MPI on the CPU, NCCL on GPUs) is timed inside the step.  Reported per K: ms per step, ms of
all-reduce per step, samples per second over all ranks, and the scaling efficiency
throughput(K) / (K * throughput(1)).  On the CPU every rank is given one BLAS thread
(OMP_NUM_THREADS=1) so that K ranks use K cores.

    python benchmarks/bench_distributed.py --ranks 1 2                      # CPU, small MemNet
    python benchmarks/bench_distributed.py --ranks 1 2 --device gpu -M 6 -R 6 -C 64 --batch 32
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memnet_engine.core.distributed import DataParallel, launched_world  # noqa: E402
from memnet_engine.core.distributed.comm import Communicator  # noqa: E402
from memnet_engine.core.proto import caffe_pb2 as pb  # noqa: E402
from memnet_engine.core.solver import SGDSolver  # noqa: E402
from memnet_engine.memnet.models import MemNetConfig, memnet_train_net  # noqa: E402


def train_param(args) -> pb.SolverParameter:
    net = memnet_train_net(MemNetConfig(args.blocks, args.recursions, args.channels), source="unused.txt",
                           batch_size=args.batch)
    data = pb.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[args.batch, 1, args.patch, args.patch])
    net.layer[0].CopyFrom(data)
    return pb.SolverParameter(net_param=net, base_lr=0.01, momentum=0.9, weight_decay=1e-4, clip_gradients=1.0,
                              lr_policy="fixed", max_iter=2**30, display=0, snapshot=0, random_seed=1)


class TimedAllreduce(DataParallel):
    """DataParallel that times its gradient all-reduce (synchronised on the GPU), apart from the time
    spent waiting for the slowest rank to finish its backward pass."""

    seconds = waiting = 0.0

    def gradients_ready(self, solver) -> None:
        sync(solver)
        start = time.perf_counter()
        self.comm.comm.Barrier()
        ready = time.perf_counter()
        super().gradients_ready(solver)
        sync(solver)
        self.waiting += ready - start
        self.seconds += time.perf_counter() - ready


def sync(solver) -> None:
    if solver.device.startswith("gpu"):
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def worker(args) -> None:
    """One rank: warm up, then time ``args.iters`` steps; rank 0 prints one JSON line."""
    world = launched_world()
    device = args.device if args.device == "cpu" else f"gpu:{world.local_rank}"
    solver = SGDSolver(train_param(args), device=device)
    rs = np.random.default_rng(world.rank)
    for name in solver.net.inputs:
        blob = solver.net.blobs[name]
        blob.data = blob.xp.asarray(rs.random(blob.shape, dtype=np.float32))
    coordinator = None
    if world.distributed:
        coordinator = TimedAllreduce(Communicator(world, device), check_every=0)
        coordinator.attach(solver)
    solver.step(args.warmup)
    if coordinator:
        coordinator.seconds = coordinator.waiting = 0.0
        coordinator.comm.comm.Barrier()
    sync(solver)
    start = time.perf_counter()
    solver.step(args.iters)
    sync(solver)
    elapsed = time.perf_counter() - start
    if world.is_root:
        allreduce, waiting = (coordinator.seconds, coordinator.waiting) if coordinator else (0.0, 0.0)
        print(json.dumps({"ranks": world.size, "ms_per_step": 1e3 * elapsed / args.iters,
                          "allreduce_ms_per_step": 1e3 * allreduce / args.iters,
                          "wait_ms_per_step": 1e3 * waiting / args.iters,
                          "samples_per_s": world.size * args.batch * args.iters / elapsed}))


def launcher() -> str:
    for candidate in (Path(sys.executable).parent / "mpiexec", shutil.which("mpiexec"), shutil.which("mpirun")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit("bench_distributed: no mpiexec found (pip install 'memnet-engine[mpi]')")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to compare (default 1 2)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("-M", "--blocks", type=int, default=2)
    ap.add_argument("-R", "--recursions", type=int, default=2)
    ap.add_argument("-C", "--channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8, help="samples per rank per step (default 8)")
    ap.add_argument("--patch", type=int, default=31)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rows = []
    for k in args.ranks:
        command = [launcher(), "-np", str(k), sys.executable, __file__, "--worker", *forwarded]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"bench_distributed: {k} ranks failed:\n{run.stderr[-3000:]}")
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    base = rows[0]["samples_per_s"] / rows[0]["ranks"]
    print(f"MemNet M{args.blocks}R{args.recursions} C{args.channels}, batch {args.batch} of {args.patch}x{args.patch} "
          f"per rank, {args.device}, {args.iters} steps")
    print(f"{'ranks':>5} {'ms/step':>9} {'all-reduce ms/step':>19} {'waiting ms/step':>16} {'samples/s':>10} "
          f"{'efficiency':>10}")
    for row in rows:
        row["efficiency"] = row["samples_per_s"] / (row["ranks"] * base)
        print(f"{row['ranks']:>5} {row['ms_per_step']:>9.1f} {row['allreduce_ms_per_step']:>19.2f} "
              f"{row['wait_ms_per_step']:>16.2f} {row['samples_per_s']:>10.1f} {row['efficiency']:>10.2f}")
    if args.json:
        print(json.dumps({"device": args.device, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
