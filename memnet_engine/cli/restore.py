"""Restore one image with a trained MemNet deploy net (super-resolution, denoising or JPEG deblocking).

Colour images are restored on Y (rgb2ycbcr) with Cb/Cr kept (bicubic-upscaled for SR);
gray images stay gray. For SR the input is the low-resolution image: it is upscaled by
--scale with MATLAB-exact bicubic first, as MemNet does, so the output is --scale times larger.
Large images are processed in tiles with overlapping context (--tile/--overlap).

    python tools/restore.py --task sr --scale 3 --model prototxt/memnet_m6r6_deploy.prototxt \\
        --weights memnet_sr.caffemodel --input low.png --output high.png
    python tools/restore.py --task sr --scale 3 --input low.png --output high.png   # the shipped demo weights
"""
import argparse
import sys

from ..core.net import Net
from ..memnet.data import TASKS
from ..memnet.data.degradations import check_level
from ..core.errors import MemnetError
from ..memnet.imageops import read_image, write_image
from ..memnet.inference import DEFAULT_OVERLAP, DEFAULT_TILE, restore_image
from ..weights import model_and_weights


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS, help="restoration task")
    p.add_argument("--scale", type=int, help="SR upscaling factor (required for --task sr)")
    p.add_argument("--model", help="deploy .prototxt (one input, one output); with --weights. Without both: the "
                                   "shipped demo weights of the task")
    p.add_argument("--weights", help="trained .caffemodel (with --model)")
    p.add_argument("--input", required=True, help="image to restore (gray or RGB)")
    p.add_argument("--output", required=True, help="where to write the result (format from the extension)")
    p.add_argument("--device", default="cpu", help="cpu or gpu[:ID] (default %(default)s)")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        scale = int(check_level("sr", args.scale)) if args.task == "sr" else 1
        model, weights, note = model_and_weights(args.task, args.model, args.weights)
        if note:
            print(note, file=sys.stderr)
        image = read_image(args.input)
        net = Net(model, "TEST", weights=weights, device=args.device)
        result = restore_image(net, image, args.task, scale, args.tile, args.overlap)
        write_image(args.output, result)
    except (MemnetError, ValueError, RuntimeError) as ex:  # RuntimeError: e.g. --device gpu without CuPy
        print(f"restore: error: {ex}", file=sys.stderr)
        return 1
    kind = "RGB" if result.ndim == 3 else "gray"
    print(f"wrote {args.output}: {kind} {result.shape[1]}x{result.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
