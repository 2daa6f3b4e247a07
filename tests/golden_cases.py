"""Running a golden unit case the way the real Caffe produced it (shared by the CPU and GPU tests)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

import memnet_engine as me
from conftest import GOLDEN_FIXTURES, SHARED_GOLDEN


def golden_params(section: str, marks: Callable[[dict], list] = lambda case: []) -> list:
    """pytest params (folder, case) for every ``section`` case ('units' or 'memnet') of the fixtures and of
    ../shared/golden; an absent folder gives one placeholder case, which ``skip_if_absent`` skips."""
    params = []
    for label, folder in (("fixtures", GOLDEN_FIXTURES), ("shared", SHARED_GOLDEN)):
        index = folder / "index.json"
        cases = json.loads(index.read_text())[section] if index.is_file() else [{"name": "(absent)"}]
        params += [pytest.param(folder, case, id=f"{label}-{case['name']}", marks=marks(case)) for case in cases]
    return params


def skip_if_absent(folder: Path) -> None:
    if not (folder / "index.json").is_file():
        pytest.skip(f"{folder} is not there")


def unit_case_arrays(folder: Path, case: dict, device: str = "cpu") -> Iterator[tuple[str, object, np.ndarray]]:
    """(npz key, our array, Caffe's array) for every array a unit case stores.

    Procedure of the golden README: load the caffemodel, zero BatchNorm sums in TRAIN, forward
    (twice for bn_train, whose first-pass running sums are yielded too), set the recorded top
    diffs, backward.
    """
    name = case["name"]
    z = np.load(folder / f"{name}.npz")
    net = me.Net(str(folder / f"{name}.prototxt"), phase=case["phase"],
                 weights=str(folder / f"{name}.caffemodel"), device=device)
    if case["phase"] == "TRAIN":  # BatchNorm starts from empty running sums; the file holds them after the pass
        for layer in net.layers:
            if layer.type == "BatchNorm":
                for blob in layer.blobs:
                    blob.data[...] = 0
    for blob in case["inputs"]:
        net.blobs[blob].data[...] = z[f"data/{blob}"]
    net.forward()
    if name == "bn_train":
        for key in (k for k in z.files if k.startswith("f1/param/")):
            layer, _, i = key[len("f1/param/"):].rpartition("/")
            yield key, net.params[layer][int(i)].data.copy(), z[key]
        net.forward()
    for out in case["outputs"]:
        if f"topdiff/{out}" in z.files:
            net.blobs[out].diff[...] = z[f"topdiff/{out}"]
    net.backward()
    for key in z.files:
        kind, _, rest = key.partition("/")
        if kind in ("data", "diff"):
            yield key, getattr(net.blobs[rest], kind), z[key]
        elif kind in ("param", "pdiff"):
            layer, _, i = rest.rpartition("/")
            yield key, getattr(net.params[layer][int(i)], "data" if kind == "param" else "diff"), z[key]
