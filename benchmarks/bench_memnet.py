#!/usr/bin/env python3
"""Benchmark MemNet (M6R6, 64 channels) on memnet-engine against the same network in PyTorch.

Measures, for each engine: a training step (forward + backward + gradient clipping + SGD
momentum/weight-decay update, the golden MemNet solver's settings; memnet-engine's SGDSolver.step)
on a batch of patches, and inference on one image; per-layer-type times of memnet-engine (like
``caffe time``), achieved convolution TFLOP/s, peak memory (GPU: CuPy pool; CPU: traced NumPy
bytes), and the ratio memnet-engine / PyTorch.  PyTorch runs eagerly in float32 with cuDNN (benchmark mode) and TF32 off.

  python benchmarks/bench_memnet.py                         # GPU: batch 64 of 31x31, image 288x288
  python benchmarks/bench_memnet.py --device cpu --batch 4 --size 64 --iters 2

The net comes from memnet_engine.models (the original release's topology and names, as in
prototxt/memnet_m6r6*.prototxt) with in-memory random data; --train-prototxt / --deploy-prototxt
use other files (e.g. prototxt/memnet_m6r6.prototxt, which reads its HDF5 list).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import memnet_engine as me  # noqa: E402
from memnet_engine.core.errors import MemnetError  # noqa: E402
from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net, memnet_train_net  # noqa: E402
from memnet_engine.core.proto import caffe_pb2 as pb  # noqa: E402
from memnet_engine.core.prototxt import read_net_param  # noqa: E402
from memnet_engine.core.solver import SGDSolver, TrainingDiverged  # noqa: E402

# The golden MemNet solver's settings; clip_gradients as in Caffe (scale all gradients so their
# global L2 norm is at most CLIP): without it MemNet diverges on random data within a few steps.
BASE_LR, MOMENTUM, WEIGHT_DECAY, CLIP = 0.01, 0.9, 1e-4, 1.0  # PyTorch gets the same


# ---------------------------------------------------------------------------------------- the net
def benchmark_nets(blocks: int, recursions: int, channels: int, batch: int, patch: int,
                   size: int) -> tuple[pb.NetParameter, pb.NetParameter]:
    """(train, deploy) MemNet of memnet_engine.models; the training data come from an Input layer
    (random patches in memory) instead of the release's HDF5Data."""
    config = MemNetConfig(blocks, recursions, channels)
    train = memnet_train_net(config, source="unused.txt", batch_size=batch)
    data = pb.LayerParameter(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add(dim=[batch, 1, patch, patch])
    train.layer[0].CopyFrom(data)
    return train, memnet_deploy_net(config, input_shape=(1, 1, size, size))


# ---------------------------------------------------------------------------------------- timing
class Device:
    """The device both engines run on ('cpu', 'gpu' or 'gpu:N'): synchronisation and its name."""

    def __init__(self, spec: str):
        self.spec = spec
        self.kind, self.index = me.core.backend.parse_device(spec)
        self.cupy = None
        if self.kind == "gpu":
            self.cupy = me.core.backend.cupy_module()
            self.cupy.cuda.Device(self.index).use()

    def sync(self) -> None:
        """Wait for memnet-engine's (CuPy's) queued GPU work."""
        if self.cupy is not None:
            self.cupy.cuda.get_current_stream().synchronize()

    def name(self) -> str:
        if self.cupy is None:
            import platform

            return f"CPU ({platform.processor() or platform.machine()})"
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def median_ms(sync: Callable[[], None], step: Callable[[], object], iters: int, warmup: int) -> float:
    """Median wall time of ``step`` in ms, with ``sync`` (wait for the device) around each run."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def engine_peak_bytes(device: Device, step: Callable[[], object]) -> "int | None":
    """Peak bytes of live arrays during ``step``: CuPy's pool on a GPU (parameters included); on the
    CPU the NumPy allocations ``step`` makes (tracemalloc; parameters and inputs excluded)."""
    if device.cupy is None:
        import tracemalloc

        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    from cupy.cuda import memory_hook

    class Peak(memory_hook.MemoryHook):
        name = "memnet_bench_peak"

        def __init__(self, base: int):
            self.live = self.peak = base

        def malloc_postprocess(self, **kw):
            self.live += kw["mem_size"]
            self.peak = max(self.peak, self.live)

        def free_postprocess(self, **kw):
            self.live -= kw["mem_size"]

    device.sync()
    with Peak(device.cupy.get_default_memory_pool().used_bytes()) as hook:
        step()
        device.sync()
    return hook.peak


# ---------------------------------------------------------------------------------------- memnet-engine
def conv_flops(net: me.Net, training: bool) -> float:
    """Multiply-adds x 2 of every convolution (forward; with ``training`` also both gradients)."""
    total = 0.0
    for i, layer in enumerate(net.layers):
        if layer.type != "Convolution":
            continue
        top = net.blobs[net.top_names[i][0]]
        weights = layer.blobs[0]
        forward = 2.0 * top.count * weights.count_range(1)
        total += forward
        if training and net.layer_need_backward[i]:
            total += forward * (1 + net.bottom_need_backward[i][0])
    return total


def solver_param(train: pb.NetParameter, seed: int) -> pb.SolverParameter:
    """The golden MemNet solver's update settings, fixed rate, no display, tests or snapshots."""
    return pb.SolverParameter(net_param=train, base_lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                              clip_gradients=CLIP, lr_policy="fixed", max_iter=2**30, display=0, snapshot=0,
                              random_seed=seed)


class EngineBench:
    def __init__(self, train_param: pb.NetParameter, deploy_param: pb.NetParameter, device: Device, seed: int):
        self.device = device
        self.solver = SGDSolver(solver_param(train_param, seed), device=device.spec)
        self.train_net = self.solver.net
        self.deploy_net = me.Net(deploy_param, phase=me.TEST, device=device.spec)
        self.deploy_net.share_weights_with(self.train_net)
        rs = np.random.default_rng(seed)
        for net in (self.train_net, self.deploy_net):
            for name in net.inputs:
                blob = net.blobs[name]
                blob.data = blob.xp.asarray(rs.random(blob.shape, dtype=np.float32))

    def train_step(self) -> float:
        """One SGDSolver iteration: forward, backward, gradient clipping, update (fused kernel on GPU)."""
        self.solver.step(1)
        return float(self.solver.smoothed_loss)

    def infer(self) -> None:
        self.deploy_net.forward_range(keep_intermediates=False)

    def layer_times(self, iters: int) -> dict[str, list[float]]:
        """Per layer type: [forward ms, backward ms] per training iteration (synchronised per layer)."""
        net, sums = self.train_net, defaultdict(lambda: [0.0, 0.0])

        def blobs(i: int):
            return [net.blobs[n] for n in net.bottom_names[i]], [net.blobs[n] for n in net.top_names[i]]

        for _ in range(iters):
            net.clear_param_diffs()
            for i, layer in enumerate(net.layers):
                bottoms, tops = blobs(i)
                sums[layer.type][0] += self._timed(lambda: layer.forward(bottoms, tops))
            for i in reversed(range(len(net.layers))):
                if net.layer_need_backward[i]:
                    layer, (bottoms, tops), need = net.layers[i], blobs(i), net.bottom_need_backward[i]
                    sums[layer.type][1] += self._timed(lambda: layer.backward(tops, need, bottoms))
        return {kind: [t / iters for t in times] for kind, times in sums.items()}

    def _timed(self, run: Callable[[], object]) -> float:
        self.device.sync()
        start = time.perf_counter()
        run()
        self.device.sync()
        return (time.perf_counter() - start) * 1e3


# ---------------------------------------------------------------------------------------- PyTorch
def torch_memnet(blocks: int, recursions: int, channels: int):
    """The same MemNet in PyTorch: BatchNorm2d(affine) = Caffe BatchNorm + Scale(bias)."""
    import torch
    from torch import nn

    def bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Module:
        return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, kernel, padding=kernel // 2))

    class MemNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature = bn_relu_conv(1, channels, 3)
            self.unit_convs = nn.ModuleList(nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in "ab")
                                            for _ in range(blocks))
            self.unit_norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(2 * recursions))
                                            for _ in range(blocks))
            self.gates = nn.ModuleList(bn_relu_conv((m + 1 + recursions) * channels, channels, 1)
                                       for m in range(blocks))
            self.recon = nn.Conv2d(channels, 1, 3, padding=1)
            self.end_norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(blocks))
            self.output_weights = nn.Parameter(torch.ones(blocks))

        def forward(self, x):
            long_memory = [self.feature(x)]
            h, outputs = long_memory[0], []
            for m in range(blocks):
                (conv_a, conv_b), norms, short = self.unit_convs[m], self.unit_norms[m], []
                for r in range(recursions):
                    a = conv_a(torch.relu(norms[2 * r](h)))
                    h = h + conv_b(torch.relu(norms[2 * r + 1](a)))
                    short.append(h)
                h = self.gates[m](torch.cat(long_memory + short, dim=1))
                long_memory.append(h)
                outputs.append(x + self.recon(torch.relu(self.end_norms[m](h))))
            final = sum(w * out for w, out in zip(self.output_weights, outputs))
            return outputs + [final]

    return MemNet()


class TorchBench:
    def __init__(self, args, device: Device, train_shape, infer_shape):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        torch.manual_seed(args.seed)
        self.torch = torch
        self.dev = torch.device(f"cuda:{device.index}" if device.kind == "gpu" else "cpu")
        self.model = torch_memnet(args.blocks, args.recursions, args.channels).to(self.dev)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=BASE_LR, momentum=MOMENTUM,
                                         weight_decay=WEIGHT_DECAY)
        self.data = torch.rand(train_shape, device=self.dev)
        self.label = torch.rand(train_shape, device=self.dev)
        self.image = torch.rand(infer_shape, device=self.dev)

    def sync(self) -> None:
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def train_step(self) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)
        outputs = self.model(self.data)
        loss = sum(((out - self.label) ** 2).sum() / (2 * out.shape[0]) for out in outputs)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.optimizer.step()
        return float(loss.detach())

    def infer(self) -> None:
        self.model.eval()
        with self.torch.no_grad():
            self.model(self.image)

    def peak_bytes(self, step: Callable[[], object]) -> "int | None":
        if self.dev.type != "cuda":
            return None
        self.torch.cuda.synchronize()
        self.torch.cuda.reset_peak_memory_stats()
        step()
        self.torch.cuda.synchronize()
        return self.torch.cuda.max_memory_allocated()


# ---------------------------------------------------------------------------------------- efficiency
def gemm_peak_gflops(device: Device, size: int, runs: int = 3) -> float:
    """GFLOP/s of a square float32 matmul of ``size`` on ``device`` (NumPy's BLAS on the CPU, cuBLAS on a GPU)."""
    xp = device.cupy if device.cupy is not None else np
    rs = np.random.default_rng(0)
    a, b = (xp.asarray(rs.random((size, size), dtype=np.float32)) for _ in range(2))
    ms = median_ms(device.sync, lambda: xp.matmul(a, b), runs, 1)
    return 2.0 * size**3 / ms / 1e6


def conv_forward_ms(net: me.Net, device: Device, run: Callable[[], object]) -> float:
    """Milliseconds spent in the forwards of ``net``'s Convolution layers during ``run()`` (synchronised)."""
    spent = [0.0]

    def timed(forward):
        def wrapper(*args):
            device.sync()
            start = time.perf_counter()
            result = forward(*args)
            device.sync()
            spent[0] += (time.perf_counter() - start) * 1e3
            return result
        return wrapper

    convs = [layer for layer in net.layers if layer.type == "Convolution"]
    for layer in convs:
        layer.forward = timed(layer.forward)
    try:
        run()
    finally:
        for layer in convs:
            del layer.forward  # back to the class's method
    return spent[0]


def conv_efficiency_lines(engine: EngineBench, device: Device, times: dict, train_flops: float,
                          infer_flops: float) -> list[str]:
    """Convolution layers alone, in GFLOP/s, next to the measured GEMM peak of the same device."""
    size = 2048 if device.cupy is None else 8192
    peak = gemm_peak_gflops(device, size)
    train = train_flops / sum(times["Convolution"]) / 1e6
    infer = infer_flops / conv_forward_ms(engine.deploy_net, device, engine.infer) / 1e6
    return [f"memnet-engine convolution layers alone: training {train:.1f} GFLOP/s, inference (one image) "
            f"{infer:.1f} GFLOP/s; GEMM peak {peak:.1f} GFLOP/s ({size}^2 float32 matmul, same run): "
            f"{100 * train / peak:.0f}% and {100 * infer / peak:.0f}% of peak"]


# ---------------------------------------------------------------------------------------- main
def _nets(args) -> tuple[pb.NetParameter, pb.NetParameter]:
    train, deploy = benchmark_nets(args.blocks, args.recursions, args.channels, args.batch, args.patch, args.size)
    if args.train_prototxt:
        train = read_net_param(args.train_prototxt)
    if args.deploy_prototxt:
        deploy = read_net_param(args.deploy_prototxt)
    return train, deploy


def _mib(value: "int | None") -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def parse_args(argv: "list[str] | None" = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="gpu", help="'gpu', 'gpu:N' or 'cpu' (PyTorch runs on the same device)")
    ap.add_argument("--batch", type=int, default=64, help="training batch size")
    ap.add_argument("--patch", type=int, default=31, help="training patch size (square)")
    ap.add_argument("--size", type=int, default=288, help="inference image size (square, one image)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--blocks", type=int, default=6, help="memory blocks M (of the generated net and PyTorch's)")
    ap.add_argument("--recursions", type=int, default=6, help="recursive units R per block")
    ap.add_argument("--channels", type=int, default=64, help="feature channels")
    ap.add_argument("--train-prototxt", help="use this training net instead of the generated one")
    ap.add_argument("--deploy-prototxt", help="use this deploy net instead of the generated one")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    for name in ("batch", "patch", "size", "iters", "blocks", "recursions", "channels"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be positive")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    return args


def measure(args, device: Device, engine: EngineBench) -> tuple[dict, dict]:
    """({engine: {train, infer, train_mem, infer_mem}}, per-layer-type times of memnet-engine)."""
    progress = tqdm(total=3 if args.no_torch else 5, desc="measuring", unit="phase", file=sys.stderr, leave=False)

    def one(label: str, sync, step: Callable[[], object], peak: Callable) -> tuple[float, "int | None"]:
        progress.set_postfix_str(label)
        result = median_ms(sync, step, args.iters, args.warmup), peak(step)
        progress.update()
        return result

    def engine_peak(step):
        return engine_peak_bytes(device, step)

    rows = {"engine": {}}
    rows["engine"]["train"], rows["engine"]["train_mem"] = one("memnet-engine training", device.sync,
                                                               engine.train_step, engine_peak)
    rows["engine"]["infer"], rows["engine"]["infer_mem"] = one("memnet-engine inference", device.sync, engine.infer,
                                                               engine_peak)
    if not args.no_torch:
        torch_bench = TorchBench(args, device, engine.train_net.blobs["data"].shape,
                                 engine.deploy_net.blobs["data"].shape)
        rows["torch"] = {}
        rows["torch"]["train"], rows["torch"]["train_mem"] = one("PyTorch training", torch_bench.sync,
                                                                 torch_bench.train_step, torch_bench.peak_bytes)
        rows["torch"]["infer"], rows["torch"]["infer_mem"] = one("PyTorch inference", torch_bench.sync,
                                                                 torch_bench.infer, torch_bench.peak_bytes)
        if not np.isfinite(torch_bench.train_step()):
            print("warning: PyTorch's training loss is not finite: its timings may include NaN/inf arithmetic",
                  file=sys.stderr)
    progress.set_postfix_str("memnet-engine per-layer profile")
    times = engine.layer_times(max(1, min(args.iters, 5)))
    progress.close()
    return rows, times


def print_report(rows: dict, times: dict, train_flops: float, infer_flops: float) -> None:
    names = list(rows)
    print(f"{'':28}" + "".join(f"{n:>16}" for n in ("memnet-engine", "PyTorch")[:len(names)])
          + ("   ratio us/PyTorch" if "torch" in rows else ""))
    for label, key, flops in (("training step (ms)", "train", train_flops), ("inference (ms)", "infer", infer_flops)):
        line = f"{label:28}" + "".join(f"{rows[n][key]:16.2f}" for n in names)
        if "torch" in rows:
            line += f"{rows['engine'][key] / rows['torch'][key]:19.2f}"
        print(line)
        print(f"{'  conv TFLOP/s':28}" + "".join(f"{flops / rows[n][key] / 1e9:16.3f}" for n in names))
        print(f"{'  peak memory (MiB)':28}" + "".join(f"{_mib(rows[n][key + '_mem']):>16}" for n in names))
    print(f"(convolution FLOPs per step: training {train_flops / 1e9:.1f} G, inference {infer_flops / 1e9:.1f} G; "
          f"engine memory: GPU = CuPy pool bytes of live arrays, CPU = NumPy allocations during the step "
          f"(tracemalloc); PyTorch: GPU = max_memory_allocated, CPU = n/a)")
    print()
    print("memnet-engine training step by layer type (ms per iteration, each layer synchronised):")
    total = sum(f + b for f, b in times.values())
    print(f"  {'type':16}{'forward':>10}{'backward':>10}{'total':>10}{'share':>8}")
    for kind, (fwd, bwd) in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {kind:16}{fwd:10.2f}{bwd:10.2f}{fwd + bwd:10.2f}{100 * (fwd + bwd) / total:7.1f}%")
    print(f"  {'all':16}{sum(f for f, _ in times.values()):10.2f}{sum(b for _, b in times.values()):10.2f}"
          f"{total:10.2f}")


def main(argv: "list[str] | None" = None) -> int:
    args = parse_args(argv)
    try:
        device = Device(args.device)
        train_param, deploy_param = _nets(args)
        engine = EngineBench(train_param, deploy_param, device, args.seed)
        if not args.no_torch:
            import torch  # noqa: F401
    except ImportError as ex:
        print(f"bench_memnet: {ex} (install PyTorch, or pass --no-torch)", file=sys.stderr)
        return 1
    except (MemnetError, ValueError, RuntimeError, OSError) as ex:
        print(f"bench_memnet: {ex}", file=sys.stderr)
        return 1
    print(f"MemNet {engine.train_net.name}: {len(engine.train_net.layers)} layers, "
          f"{sum(p.blob.count for p in engine.train_net.learnable_params)} learnable values | "
          f"{device.name()} | float32")
    print(f"train: batch {engine.train_net.blobs['data'].shape}, inference: {engine.deploy_net.blobs['data'].shape}; "
          f"median of {args.iters} after {args.warmup} warm-up")
    try:
        rows, times = measure(args, device, engine)
    except TrainingDiverged as ex:
        print(f"bench_memnet: memnet-engine's training diverged: {ex}", file=sys.stderr)
        return 1
    print()
    train_flops, infer_flops = conv_flops(engine.train_net, training=True), conv_flops(engine.deploy_net, False)
    print_report(rows, times, train_flops, infer_flops)
    print("\n".join(conv_efficiency_lines(engine, device, times, train_flops, infer_flops)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
