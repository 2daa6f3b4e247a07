"""The embedded default SR training set: built once from skimage's photos, cached, rebuilt if incomplete."""
import os

import h5py
import numpy as np
import pytest

from memnet_engine.memnet.data import default, patch_count, task_channel
from memnet_engine.memnet.data.default import ensure_default_training_set
from memnet_engine.memnet.imageops import modcrop

pytest.importorskip("skimage")


def test_default_set_is_built_from_the_bundled_photos(tmp_path):
    list_path = ensure_default_training_set(str(tmp_path), progress=False)
    assert list_path == os.path.join(str(tmp_path), default.CACHE_FOLDER, "train.txt")
    with open(list_path) as f:
        names = f.read().split()
    total = 0
    for name in names:
        with h5py.File(os.path.join(os.path.dirname(list_path), name), "r") as h5:
            assert h5["data"].shape == h5["label"].shape and h5["data"].shape[1:] == (1, 31, 31)
            assert h5["data"].dtype == np.float32
            total += h5["data"].shape[0]
    expected = sum(patch_count(modcrop(task_channel(img, "sr"), s).shape, 31, 21)
                   for img in default.default_images() for s in (2, 3, 4))
    assert total == expected and 8000 < total < 20000


def test_default_set_is_reused_and_rebuilt_when_incomplete(tmp_path, monkeypatch):
    monkeypatch.setattr(default, "DEFAULT_IMAGES", ("camera",))
    monkeypatch.setenv("MEMNET_CACHE", str(tmp_path))
    list_path = ensure_default_training_set(progress=False)
    assert list_path.startswith(str(tmp_path))
    first = os.path.join(os.path.dirname(list_path), "train_0000.h5")
    stamp = os.stat(first).st_mtime_ns
    assert ensure_default_training_set(progress=False) == list_path
    assert os.stat(first).st_mtime_ns == stamp  # reused, not rebuilt
    os.unlink(first)
    assert ensure_default_training_set(progress=False) == list_path
    assert os.path.exists(first) and default.is_complete(list_path)
