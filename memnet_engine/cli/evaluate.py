"""Evaluate a method on a benchmark folder with the MemNet paper's protocol; print PSNR/SSIM per image.

Protocol (MemNet's test_MemNet_M6R6_{SR,GD,JD}.m, MATLAB conventions throughout):
  sr       Y of rgb2ycbcr (gray files as they are) as double, modcrop to the scale, bicubic
           imresize down by 1/scale and up again; the result and the ground truth are
           rounded to uint8 (uint8(single(y) * 255)), `scale` pixels are shaved off each side.
  denoise  gray image (rgb2gray for colour files) + Gaussian noise of std sigma/255, not
           clipped; the noise of every image comes from numpy.random.default_rng(--seed).
  jpeg     Y (or gray) uint8 image coded as JPEG at --quality with libjpeg (Pillow) and decoded.
  For denoise/jpeg the scores use single(y) * 255 without rounding or shaving, as the scripts do.
PSNR = 20 log10(255 / RMSE); SSIM = Wang's ssim_index.m (11x11 Gaussian, sigma 1.5, K = [0.01 0.03],
L = 255, no downsampling). Methods: the task's baseline (bicubic | noisy | jpeg = the corrupted
input itself) or memnet (a deploy net given by --model/--weights, run in overlapping tiles).

    python tools/evaluate.py --task sr --scale 3 --method bicubic --dataset ../shared/datasets/Set5
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from ..memnet.data import TASKS, degrade, task_channel
from ..memnet.data.degradations import LEVEL_NAMES, check_level
from ..core.errors import MemnetError
from ..memnet.imageops import list_images, read_image
from ..memnet.inference import DEFAULT_OVERLAP, DEFAULT_TILE, restore
from ..memnet.scoring import protocol_scores
from .help_format import PlainHelpFormatter
from .model_loading import add_device_option, add_strict_option, load_task_net

BASELINES = {"sr": "bicubic", "denoise": "noisy", "jpeg": "jpeg"}
TILES = {"sr": DEFAULT_TILE, "denoise": 120, "jpeg": DEFAULT_TILE}  # thresh_hei of the MATLAB scripts


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=PlainHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS, help="restoration task")
    p.add_argument("--dataset", required=True, metavar="DIR", help="folder of ground-truth images")
    p.add_argument("--scale", type=int, help="SR factor (task sr)")
    p.add_argument("--sigma", type=float, help="noise std on the 0..255 scale (task denoise)")
    p.add_argument("--quality", type=int, help="JPEG quality factor (task jpeg)")
    p.add_argument("--method", required=True, choices=sorted(set(BASELINES.values())) + ["memnet"],
                   help="the task's baseline (bicubic, noisy or jpeg) or memnet")
    p.add_argument("--model", help="deploy .prototxt (method memnet, with --weights; without both: the shipped demo "
                                   "weights of the task)")
    p.add_argument("--weights", help="trained .caffemodel (method memnet, with --model)")
    add_device_option(p)
    add_strict_option(p)
    p.add_argument("--tile", type=int, help="tile core size for memnet; 0 = whole image "
                                            "(default 150, 120 for denoise, as the MATLAB scripts)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help="context pixels around each tile (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed, reset for every image (default %(default)s)")
    p.add_argument("--json", action="store_true", help="end with one JSON line holding the means and per-image scores")
    args = p.parse_args(argv)
    args.level = {"sr": args.scale, "denoise": args.sigma, "jpeg": args.quality}[args.task]
    if args.level is None:
        p.error(f"--task {args.task} needs --{LEVEL_NAMES[args.task]}")
    if args.method != "memnet" and args.method != BASELINES[args.task]:
        p.error(f"method {args.method} is not a baseline of task {args.task} (use {BASELINES[args.task]} or memnet)")
    if args.method == "memnet" and bool(args.model) != bool(args.weights):
        p.error("method memnet needs both --model and --weights, or neither for the shipped demo weights")
    if args.tile is None:
        args.tile = TILES[args.task]
    return args


def evaluate(args: argparse.Namespace, paths: list[str]) -> list[dict]:
    net = None
    if args.method == "memnet":
        net = load_task_net(args.task, args.model, args.weights, args.device, args.strict)
    rows = []
    for path in tqdm(paths, desc=f"{args.task} {args.method}", unit="img", file=sys.stderr):
        try:
            clean = task_channel(read_image(path), args.task)
            degraded, clean = degrade(clean, args.task, args.level, np.random.default_rng(args.seed))
            result = degraded if net is None else restore(net, degraded, args.tile, args.overlap)
            score = protocol_scores(args.task, args.level, clean, result)
        except ValueError as ex:
            raise MemnetError(f"{path}: {ex}") from None
        rows.append({"image": os.path.basename(path), "psnr": score[0], "ssim": score[1]})
    return rows


def finite(x: float) -> "float | None":
    return x if math.isfinite(x) else None


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        check_level(args.task, args.level)
        rows = evaluate(args, list_images(args.dataset))
    # RuntimeError: e.g. a CUDA failure; MemoryError: a --tile too big for this machine
    except (MemnetError, ValueError, RuntimeError, MemoryError) as ex:
        print(f"evaluate: error: {ex}", file=sys.stderr)
        return 1
    mean_psnr = float(np.mean([r["psnr"] for r in rows]))
    mean_ssim = float(np.mean([r["ssim"] for r in rows]))
    name = os.path.basename(os.path.normpath(args.dataset))
    width = max(len("image"), *(len(r["image"]) for r in rows))
    print(f"{'image':<{width}}  PSNR (dB)    SSIM")
    for r in rows:
        print(f"{r['image']:<{width}}  {r['psnr']:9.4f}  {r['ssim']:.4f}")
    print(f"{'mean':<{width}}  {mean_psnr:9.4f}  {mean_ssim:.4f}")
    level = f"{LEVEL_NAMES[args.task]} {args.level:g}"
    print(f"{name} {args.task} {level} {args.method}: {mean_psnr:.2f} dB / {mean_ssim:.4f} ({len(rows)} images)")
    where = f" on {args.device}" if args.method == "memnet" else ""
    print(f"evaluated {len(rows)} images in {time.perf_counter() - start:.1f} s{where}", file=sys.stderr)
    if args.json:
        print(json.dumps({"dataset": name, "task": args.task, LEVEL_NAMES[args.task]: args.level,
                          "method": args.method, "psnr": finite(mean_psnr), "ssim": mean_ssim,
                          "images": [dict(r, psnr=finite(r["psnr"])) for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
