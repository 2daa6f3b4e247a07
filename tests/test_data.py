"""Training data: patches, augmentation, corruptions, the streaming HDF5 writer and the builder."""
import os

import h5py
import numpy as np
import pytest

from memnet_engine import Net
from memnet_engine.memnet.data import (PatchWriter, TrainingSetSpec, augmentations, build_training_set, degrade,
                                extract_patches, patch_count, task_channel)
from memnet_engine.memnet.data.degradations import check_level
from memnet_engine.memnet.imageops import imresize, jpeg_roundtrip, modcrop, rgb2gray, rgb2ycbcr
from memnet_engine.core.proto import caffe_pb2 as pb


def test_extract_patches_grid_and_content():
    img = np.arange(100 * 80, dtype=np.float64).reshape(100, 80)
    patches = extract_patches(img, 31, 21)
    # rows start at 0, 21, 42, 63 (84 + 31 > 100); columns at 0, 21, 42 (63 + 31 > 80)
    assert patches.shape == (12, 31, 31) and patch_count(img.shape, 31, 21) == 12
    for k, (r, c) in enumerate((r, c) for r in (0, 21, 42, 63) for c in (0, 21, 42)):
        np.testing.assert_array_equal(patches[k], img[r:r + 31, c:c + 31])
    assert extract_patches(img[:30], 31, 21).shape == (0, 31, 31)
    assert extract_patches(img[:31, :31], 31, 21).shape == (1, 31, 31)


def test_augmentations_are_the_eight_rotations_and_flips():
    img = np.arange(12).reshape(3, 4)
    versions = list(augmentations(img))
    assert len(versions) == 8
    np.testing.assert_array_equal(versions[0], img)
    np.testing.assert_array_equal(versions[1], np.rot90(img))
    np.testing.assert_array_equal(versions[4], np.fliplr(img))
    assert len({v.tobytes() + bytes(v.shape) for v in versions}) == 8
    assert sorted(v.shape for v in versions) == [(3, 4)] * 4 + [(4, 3)] * 4


def test_task_channel():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(task_channel(colour, "sr"), rgb2ycbcr(colour)[..., 0])
    np.testing.assert_array_equal(task_channel(colour, "jpeg"), rgb2ycbcr(colour)[..., 0])
    np.testing.assert_array_equal(task_channel(colour, "denoise"), rgb2gray(colour))
    gray = colour[..., 0]
    for task in ("sr", "denoise", "jpeg"):
        np.testing.assert_array_equal(task_channel(gray, task), gray)


def test_degradations():
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (50, 47), dtype=np.uint8)
    data, label = degrade(clean, "sr", 3)
    expected_label = modcrop(clean / 255.0, 3)
    np.testing.assert_array_equal(label, expected_label)
    np.testing.assert_allclose(data, imresize(imresize(expected_label, 1 / 3), 3), atol=1e-12)
    data, label = degrade(clean, "jpeg", 10)
    np.testing.assert_array_equal(data, jpeg_roundtrip(clean, 10) / 255.0)
    big = np.full((400, 400), 128, np.uint8)
    noisy, label = degrade(big, "denoise", 50, np.random.default_rng(7))
    assert np.std(noisy - label) * 255 == pytest.approx(50, rel=0.02)
    again, _ = degrade(big, "denoise", 50, np.random.default_rng(7))
    np.testing.assert_array_equal(noisy, again)
    with pytest.raises(ValueError):
        degrade(clean, "denoise", 50)


@pytest.mark.parametrize("task,level", [("sr", 1), ("sr", 2.5), ("jpeg", 0), ("jpeg", 101), ("denoise", -1)])
def test_check_level_rejects(task, level):
    with pytest.raises(ValueError):
        check_level(task, level)


def _read_set(list_path):
    folder = os.path.dirname(list_path)
    with open(list_path) as f:
        names = f.read().split()
    assert all(not os.path.isabs(n) for n in names)
    arrays = []
    for name in names:
        with h5py.File(os.path.join(folder, name), "r") as h5:
            arrays.append((h5["data"][:], h5["label"][:]))
    return names, arrays


def test_writer_files_shuffle_and_pairing(tmp_path):
    writer = PatchWriter(str(tmp_path), "set", patches_per_file=1000, shuffle_buffer=2000,
                         rng=np.random.default_rng(0))
    values = np.arange(2500, dtype=np.float32)
    for chunk in np.split(values, [700, 1500, 2100]):
        patches = np.broadcast_to(chunk[:, None, None], (len(chunk), 5, 5))
        writer.add(patches, -patches)
    list_path = writer.close()
    assert list_path == str(tmp_path / "set.txt")
    names, arrays = _read_set(list_path)
    assert names == ["set_0000.h5", "set_0001.h5", "set_0002.h5"] and writer.total == 2500
    assert [d.shape for d, _ in arrays] == [(1000, 1, 5, 5), (1000, 1, 5, 5), (500, 1, 5, 5)]
    data = np.concatenate([d for d, _ in arrays])
    label = np.concatenate([lab for _, lab in arrays])
    assert data.dtype == np.float32 and label.dtype == np.float32
    np.testing.assert_array_equal(label, -data)  # pairs stay together
    np.testing.assert_array_equal(np.sort(data[:, 0, 0, 0]), values)  # every patch exactly once
    assert not np.array_equal(data[:, 0, 0, 0], values)  # shuffled
    assert sorted(os.listdir(tmp_path)) == ["set.txt"] + names  # no temporary files left


def test_writer_rejects_bad_input(tmp_path):
    writer = PatchWriter(str(tmp_path), patches_per_file=4, shuffle_buffer=4)
    with pytest.raises(ValueError):
        writer.add(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="no patches"):
        writer.close()


def _images(seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (75, 64, 3), dtype=np.uint8), rng.integers(0, 256, (66, 90), dtype=np.uint8)]


def test_builder_counts_and_values(tmp_path):
    images = _images()
    spec = TrainingSetSpec("sr", seed=5)
    writer = build_training_set(images, spec, str(tmp_path), patches_per_file=500, shuffle_buffer=1000,
                                progress=False)
    expected = sum(patch_count(modcrop(v, s).shape, 31, 21)
                   for img in images for v in augmentations(task_channel(img, "sr")) for s in (2, 3, 4))
    assert writer.total == expected
    _, arrays = _read_set(writer.list_path)
    label = np.concatenate([lab for _, lab in arrays])
    assert label.shape[1:] == (1, 31, 31)
    np.testing.assert_allclose(label * 255, np.round(label * 255), atol=1e-4)  # labels are uint8 / 255
    assert 0 <= label.min() and label.max() <= 1
    again = build_training_set(images, spec, str(tmp_path / "again"), patches_per_file=500, shuffle_buffer=1000,
                               progress=False)
    for (d1, l1), (d2, l2) in zip(arrays, _read_set(again.list_path)[1]):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)


def test_builder_output_feeds_hdf5data_layer(tmp_path):
    writer = build_training_set(_images(), TrainingSetSpec("jpeg", augment=False), str(tmp_path / "set"),
                                patches_per_file=16, shuffle_buffer=32, progress=False)
    assert writer.total == sum(2 * patch_count(task_channel(i, "jpeg").shape, 31, 21) for i in _images())
    param = pb.NetParameter(name="feed")
    layer = param.layer.add(name="data", type="HDF5Data")
    layer.top.extend(["data", "label"])
    layer.hdf5_data_param.source = "set/train.txt"
    layer.hdf5_data_param.batch_size = 8
    net_file = tmp_path / "net.prototxt"
    from google.protobuf import text_format
    net_file.write_text(text_format.MessageToString(param))
    cwd = os.getcwd()
    os.chdir("/")  # the list and the .h5 names resolve from the net's and the list's folders
    try:
        net = Net(str(net_file), "TRAIN")
        out = net.forward()
    finally:
        os.chdir(cwd)
    assert out["data"].shape == (8, 1, 31, 31) and out["label"].shape == (8, 1, 31, 31)
    np.testing.assert_allclose(out["label"] * 255, np.round(out["label"] * 255), atol=1e-4)


def test_make_training_data_tool(tmp_path):
    import subprocess
    import sys

    from memnet_engine.memnet.imageops import write_image
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    images = tmp_path / "images"
    for i, img in enumerate(_images()):
        write_image(str(images / f"{i}.png"), img)
    tool = [sys.executable, os.path.join(root, "tools", "make_training_data.py")]
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run(tool + ["--task", "denoise", "--images", str(images), "--out", str(tmp_path / "out"),
                                  "--levels", "25", "--no-augment", "--file-size", "10"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    expected = sum(patch_count(img.shape[:2], 31, 21) for img in _images())
    assert done.stdout.startswith(f"{expected} patches of 31x31 from 2 images")
    names, arrays = _read_set(str(tmp_path / "out" / "train.txt"))
    assert len(names) == -(-expected // 10) and sum(len(d) for d, _ in arrays) == expected
    done = subprocess.run(tool + ["--task", "sr", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "none" in done.stderr
