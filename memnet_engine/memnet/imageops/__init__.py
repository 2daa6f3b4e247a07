"""MATLAB-compatible image operations used by the MemNet/VDSR/DRRN training and test scripts."""
from .color import luminance, rgb2gray, rgb2ycbcr, ycbcr2rgb
from .geometry import modcrop, shave
from .io import list_images, read_image, write_image
from .jpeg import jpeg_roundtrip
from .metrics import psnr, ssim
from .resize import imresize, round_half_away, to_uint8

__all__ = ["imresize", "jpeg_roundtrip", "list_images", "luminance", "modcrop", "psnr",
           "read_image", "rgb2gray", "rgb2ycbcr", "round_half_away", "shave", "ssim", "to_uint8",
           "write_image", "ycbcr2rgb"]
