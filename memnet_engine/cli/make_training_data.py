"""Build a MemNet training set (HDF5 + list file) from folders of images, following the paper.

Y channel (gray for denoising), 8 rotated/flipped versions of every image, every corruption
level of the task mixed in one set (SR x2/x3/x4, noise sigma 30/50/70, JPEG q10/q20),
31 x 31 patches at stride 21, shuffled through a bounded buffer into HDF5 files of at most
--file-size patches. Point an HDF5Data layer's ``source`` at the printed list file.

    memnet-make-data --task sr --images ../shared/datasets/T91 ../shared/datasets/BSD200_train --out data/sr291
"""
import argparse
import sys

from ..memnet.data import PAPER_LEVELS, TASKS, TrainingSetSpec, build_training_set
from ..memnet.data.builder import PATCH_SIZE, STRIDE
from ..core.errors import MemnetError
from ..memnet.imageops import list_images, read_image
from .help_format import PlainHelpFormatter


def parse_args(argv=None) -> argparse.Namespace:
    levels = "; ".join(f"{task}: {' '.join(str(v) for v in values)}" for task, values in PAPER_LEVELS.items())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=PlainHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS, help="restoration task")
    p.add_argument("--images", required=True, nargs="+", metavar="DIR", help="folders of training images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the .h5 files and the list file")
    p.add_argument("--levels", nargs="+", type=float, metavar="L",
                   help=f"corruption levels to mix (scales, sigmas or qualities; default the paper's: {levels})")
    p.add_argument("--patch-size", type=int, default=PATCH_SIZE, help="patch side in pixels (default %(default)s)")
    p.add_argument("--stride", type=int, default=STRIDE, help="patch stride in pixels (default %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="skip the 8 rotated/flipped versions")
    p.add_argument("--seed", type=int, default=0, help="seed for noise and shuffling (default %(default)s)")
    p.add_argument("--file-size", type=int, default=16384,
                   help="patches per HDF5 file (default %(default)s, about 126 MB at 31x31)")
    p.add_argument("--shuffle-buffer", type=int, default=65536,
                   help="patches held in memory for shuffling across images; peak memory is about "
                        "2 x this x 7.7 KB at 31x31 (default %(default)s, ~1.2 GB peak)")
    p.add_argument("--prefix", default="train", help="file name prefix: PREFIX.txt, PREFIX_0000.h5 ... "
                                                     "(default %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = TrainingSetSpec(args.task, args.levels or (), args.patch_size, args.stride, not args.no_augment,
                               args.seed)
        paths = [path for folder in args.images for path in list_images(folder)]
        writer = build_training_set((read_image(path) for path in paths), spec, args.out, count=len(paths),
                                    prefix=args.prefix, patches_per_file=args.file_size,
                                    shuffle_buffer=max(args.shuffle_buffer, args.file_size))
    except (MemnetError, ValueError, OSError) as ex:
        print(f"make_training_data: error: {ex}", file=sys.stderr)
        return 1
    print(f"{writer.total} patches of {spec.patch_size}x{spec.patch_size} from {len(paths)} images "
          f"({args.task}, levels {' '.join(f'{v:g}' for v in spec.levels)}) in {len(writer.files)} file(s)")
    print(f"list file: {writer.list_path}  (hdf5_data_param {{ source: \"{writer.list_path}\" }})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
