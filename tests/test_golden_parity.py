"""Parity with the real BVLC Caffe on its own reference data (tests/fixtures/golden, ../shared/golden)."""
import json

import numpy as np
import pytest

import memnet_engine as me
from conftest import GOLDEN_FIXTURES, SHARED_GOLDEN, shared_golden


def scaled_error(ours, ref) -> float:
    ours = np.asarray(me.to_numpy(ours), np.float64).reshape(ref.shape)
    return float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max())))


def run_unit_case(folder, case, device="cpu") -> tuple[float, str]:
    """Run one unit case the way the reference was produced; return the worst scaled error."""
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
        first = {k[3:]: z[k] for k in z.files if k.startswith("f1/param/")}
        for key, ref in first.items():
            layer, _, i = key[len("param/"):].rpartition("/")
            assert scaled_error(net.params[layer][int(i)].data, ref) <= 1e-5
        net.forward()
    for out in case["outputs"]:
        if f"topdiff/{out}" in z.files:
            net.blobs[out].diff[...] = z[f"topdiff/{out}"]
    net.backward()
    worst, where = 0.0, ""
    for key in z.files:
        kind, _, rest = key.partition("/")
        if kind in ("data", "diff"):
            array = getattr(net.blobs[rest], kind)
        elif kind in ("param", "pdiff"):
            layer, _, i = rest.rpartition("/")
            array = getattr(net.params[layer][int(i)], "data" if kind == "param" else "diff")
        else:
            continue
        err = scaled_error(array, z[key])
        if err >= worst:
            worst, where = err, key
    return worst, where


FIXTURE_UNITS = json.loads((GOLDEN_FIXTURES / "index.json").read_text())["units"]


@pytest.mark.parametrize("case", FIXTURE_UNITS, ids=[c["name"] for c in FIXTURE_UNITS])
def test_unit_case_fixture(case):
    worst, where = run_unit_case(GOLDEN_FIXTURES, case)
    assert worst <= 1e-5, f"{case['name']}: {worst:.2e} at {where}"


def test_unit_cases_shared():
    folder = shared_golden()
    cases = json.loads((folder / "index.json").read_text())["units"]
    bad = []
    for case in cases:
        worst, where = run_unit_case(folder, case)
        if worst > 1e-5:
            bad.append(f"{case['name']}: {worst:.2e} at {where}")
    assert not bad, bad


def deploy_error(folder, name: str, iters: int) -> tuple[float, str]:
    z = np.load(folder / f"{name}.npz")
    net = me.Net(str(folder / f"{name}_deploy.prototxt"), phase=me.TEST,
                 weights=str(folder / f"{name}_iter_{iters}.caffemodel"))
    net.forward(data=z["deploy/input"])
    errors = {key: scaled_error(net.blobs[key[len("deploy/"):]].data, z[key])
              for key in z.files if key.startswith("deploy/") and key != "deploy/input"}
    assert errors, "no reference outputs"
    where = max(errors, key=errors.get)
    return errors[where], where


def test_memnet_m2r2_deploy_fixture():
    worst, where = deploy_error(GOLDEN_FIXTURES, "memnet_m2r2_c8", 4)
    assert worst <= 1e-4, f"{worst:.2e} at {where}"


def test_memnet_m6r6_deploy_shared():
    folder = shared_golden()
    worst, where = deploy_error(folder, "memnet_m6r6_c64", 2)
    assert worst <= 1e-4, f"{worst:.2e} at {where}"


def test_memnet_m2r2_train_forward_fixture():
    """First training forward from Caffe's initial weights: every blob Caffe stored."""
    z = np.load(GOLDEN_FIXTURES / "memnet_m2r2_c8.npz")
    net = me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"), phase=me.TRAIN,
                 weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel"))
    net.forward_range()
    keys = [k for k in z.files if k.startswith("iter0/data/")]
    assert len(keys) > 40
    worst = max(scaled_error(net.blobs[k[len("iter0/data/"):]].data, z[k]) for k in keys)
    assert worst <= 1e-4
    losses = [float(net.blobs[n].data) for n in z["loss_names"]]
    np.testing.assert_allclose(losses, z["losses"][0], rtol=1e-5)


