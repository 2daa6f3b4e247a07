"""Restore one image with a trained MemNet deploy net (super-resolution, denoising or JPEG deblocking).

Colour images are restored on Y (rgb2ycbcr) with Cb/Cr kept (bicubic-upscaled for SR);
gray images stay gray. For SR the input is the low-resolution image: it is upscaled by
--scale with MATLAB-exact bicubic first, as MemNet does, so the output is --scale times larger.
Large images are processed in tiles with overlapping context (--tile/--overlap); a progress bar
counts them.

Example (memnet-restore is the installed name of python tools/restore.py):
    memnet-restore --task sr --scale 3 --model deploy.prototxt --weights sr.caffemodel --input low.png --output high.png
    memnet-restore --task sr --scale 3 --input low.png --output high.png   # the shipped demo weights
"""
import argparse
import sys
import time

from tqdm import tqdm

from ..memnet.data import TASKS
from ..memnet.data.degradations import check_level
from ..core.errors import MemnetError
from ..memnet.imageops import read_image, write_image
from ..memnet.inference import DEFAULT_OVERLAP, DEFAULT_TILE, restore_image
from .help_format import PlainHelpFormatter
from .model_loading import add_device_option, add_strict_option, load_task_net


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=PlainHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS, help="restoration task")
    p.add_argument("--scale", type=int, help="SR upscaling factor (required for --task sr)")
    p.add_argument("--model", help="deploy .prototxt (one input, one output); with --weights. Without both: the "
                                   "shipped demo weights of the task")
    p.add_argument("--weights", help="trained .caffemodel (with --model)")
    p.add_argument("--input", required=True, help="image to restore (gray or RGB)")
    p.add_argument("--output", required=True, help="where to write the result (format from the extension)")
    add_device_option(p)
    add_strict_option(p)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help="tile core size in pixels; 0 = whole image at once (default %(default)s)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help="context pixels around each tile (default %(default)s, as MemNet's test scripts)")
    args = p.parse_args(argv)
    if args.task == "sr" and args.scale is None:
        p.error("--task sr needs --scale")
    if args.overlap < 0:
        p.error("--overlap must be >= 0")
    return args


class TileProgress:
    """A progress bar over the tiles of one image (restore's on_tile callback)."""

    def __init__(self):
        self.bar: "tqdm | None" = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="restoring", unit="tile", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    progress = TileProgress()
    try:
        scale = int(check_level("sr", args.scale)) if args.task == "sr" else 1
        image = read_image(args.input)
        net = load_task_net(args.task, args.model, args.weights, args.device, args.strict)
        result = restore_image(net, image, args.task, scale, args.tile, args.overlap, on_tile=progress)
        write_image(args.output, result)
    # RuntimeError: e.g. a CUDA failure; MemoryError: a --tile too big for this machine
    except (MemnetError, ValueError, RuntimeError, MemoryError) as ex:
        progress.close()
        print(f"restore: error: {ex}", file=sys.stderr)
        return 1
    progress.close()
    kind = "RGB" if result.ndim == 3 else "gray"
    print(f"wrote {args.output}: {kind} {result.shape[1]}x{result.shape[0]} in {time.perf_counter() - start:.1f} s "
          f"on {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
