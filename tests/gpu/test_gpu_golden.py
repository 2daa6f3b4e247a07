"""Golden data from the real Caffe, reproduced by GPU nets with the golden README's tolerances.

Unit cases: every case of tests/fixtures/golden and of ../shared/golden (skipped when absent),
with the procedure of the README (load the caffemodel, zero BatchNorm sums in TRAIN, forward --
twice for bn_train --, set the recorded top diffs, backward).  MemNet: the small M2R2 net's deploy
outputs and its first training forward (blobs and the three losses).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import memnet_engine as me
from conftest import GOLDEN_FIXTURES, SHARED_GOLDEN  # tests/conftest.py
from golden_cases import golden_params, skip_if_absent, unit_case_arrays

from .gpu_testing import assert_close, host

UNIT_TOLERANCE = 1e-5
MEMNET_TOLERANCE = 1e-4


@pytest.mark.parametrize("folder, unit", golden_params("units"))
def test_golden_unit_case_on_gpu(gpu, folder: Path, unit: dict) -> None:
    skip_if_absent(folder)
    compared = 0
    for key, array, reference in unit_case_arrays(folder, unit, device="gpu"):
        assert isinstance(array, gpu.ndarray), f"{key} is not on the device"
        assert_close(array, reference, UNIT_TOLERANCE, f"{unit['name']} {key}")
        compared += 1
    assert compared >= 3


@pytest.mark.parametrize("folder", [GOLDEN_FIXTURES, SHARED_GOLDEN], ids=["fixtures", "shared"])
@pytest.mark.parametrize("keep_intermediates", [True, False])
def test_memnet_m2r2_deploy_on_gpu(gpu, folder: Path, keep_intermediates: bool) -> None:
    skip_if_absent(folder)
    z = np.load(folder / "memnet_m2r2_c8.npz")
    net = me.Net(folder / "memnet_m2r2_c8_deploy.prototxt", phase=me.TEST,
                 weights=folder / "memnet_m2r2_c8_iter_4.caffemodel", device="gpu")
    out = net.forward(data=z["deploy/input"], keep_intermediates=keep_intermediates)
    checked = [key for key in z.files if key.startswith("deploy/") and key != "deploy/input"]
    for key in checked:
        blob = net.blobs[key[len("deploy/"):]]
        if keep_intermediates or key[len("deploy/"):] in out:
            assert_close(blob.data, z[key], MEMNET_TOLERANCE, key)
    assert_close(out["HR_recovery"], z["deploy/HR_recovery"], MEMNET_TOLERANCE, "output")


@pytest.mark.parametrize("folder", [GOLDEN_FIXTURES, SHARED_GOLDEN], ids=["fixtures", "shared"])
def test_memnet_m2r2_first_training_forward_on_gpu(gpu, folder: Path, monkeypatch) -> None:
    skip_if_absent(folder)
    monkeypatch.chdir(folder)  # Caffe resolves the HDF5 list from the working directory
    z = np.load("memnet_m2r2_c8.npz")
    net = me.Net("memnet_m2r2_c8_train.prototxt", phase=me.TRAIN, weights="memnet_m2r2_c8_init.caffemodel",
                 device="gpu")
    net.forward()
    keys = [k for k in z.files if k.startswith("iter0/data/")]
    assert len(keys) > 20
    for key in keys:
        assert_close(net.blobs[key[len("iter0/data/"):]].data, z[key], MEMNET_TOLERANCE, key)
    for name, expected in zip(z["loss_names"], z["losses"][0]):
        got = float(host(net.blobs[str(name)].data))
        assert abs(got - expected) <= MEMNET_TOLERANCE * max(1.0, abs(expected)), (name, got, expected)
