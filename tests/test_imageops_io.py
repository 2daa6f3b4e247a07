"""Image reading/writing: gray stays 2-D, colour becomes H x W x 3, writes are atomic."""
import os

import numpy as np
import pytest
from PIL import Image

from memnet_engine.core.errors import MemnetError
from memnet_engine.memnet.imageops import list_images, read_image, write_image


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
