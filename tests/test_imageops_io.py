"""Image reading/writing: gray stays 2-D, colour becomes H x W x 3, writes are atomic."""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from memnet_engine.core.errors import MemnetError
from memnet_engine.memnet.imageops import list_images, read_image, write_image
from memnet_engine.memnet.imageops.io import MAX_PIXELS, ImageTooLarge


def test_read_modes(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(gray).save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(read_image(str(tmp_path / "g.bmp")), gray)
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "c.png")
    colour = read_image(str(tmp_path / "c.png"))
    assert colour.shape == (5, 6, 3) and colour[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(str(tmp_path / "p.png")).shape == (5, 6, 3)


def test_read_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(MemnetError, match="bad.png"):
        read_image(str(tmp_path / "bad.png"))
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(MemnetError, match="unsupported image mode"):
        read_image(str(tmp_path / "f.tif"))
    with pytest.raises(MemnetError, match="does not exist"):
        list_images(str(tmp_path / "missing"))


def test_write_is_lossless_and_leaves_no_temporary_files(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = str(tmp_path / "out" / "x.png")
    write_image(path, img)
    np.testing.assert_array_equal(read_image(path), img)
    assert os.listdir(tmp_path / "out") == ["x.png"]
    assert list_images(str(tmp_path / "out")) == [path]
    with pytest.raises(MemnetError, match="unknown image extension"):
        write_image(str(tmp_path / "x.nope"), img)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height gray pixels and holds no pixel data (tens of bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12000, 60000])  # above our limit; above Pillow's own bomb limit
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_header(side, side))
    with pytest.raises(ImageTooLarge, match=r"bomb.png"):
        read_image(str(tmp_path / "bomb.png"))


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setenv("MEMNET_MAX_PIXELS", "500")
    with pytest.raises(ImageTooLarge, match=r"small.png' is 30 x 20 = 600 pixels, more than the limit of 500 \(set "
                                            r"MEMNET_MAX_PIXELS to allow more\)"):
        read_image(str(tmp_path / "small.png"))
    monkeypatch.setenv("MEMNET_MAX_PIXELS", "600")
    assert read_image(str(tmp_path / "small.png")).shape == (20, 30)
    monkeypatch.setenv("MEMNET_MAX_PIXELS", "many")
    with pytest.raises(MemnetError, match="MEMNET_MAX_PIXELS='many' is not a number of pixels"):
        read_image(str(tmp_path / "small.png"))
    assert MAX_PIXELS == 2**27
    monkeypatch.delenv("MEMNET_MAX_PIXELS")
    (tmp_path / "header_only.png").write_bytes(png_header(300, 200))  # within the limit, but no pixel data
    with pytest.raises(MemnetError, match="cannot read image"):
        read_image(str(tmp_path / "header_only.png"))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_not_an_image():
    with pytest.raises(MemnetError, match="not a regular file"):
        read_image("/dev/zero")
