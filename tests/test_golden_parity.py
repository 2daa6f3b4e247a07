"""Parity with the real BVLC Caffe on its own reference data (tests/fixtures/golden, ../shared/golden)."""
import json

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.gradcheck import scaled_error
from memnet_engine.core.layers.convolution import ConvolutionLayer
from conftest import GOLDEN_FIXTURES, shared_golden
from golden_cases import unit_case_arrays


def run_unit_case(folder, case) -> tuple[float, str]:
    """The worst scaled error of a unit case and where it is."""
    errors = {key: scaled_error(ours, ref) for key, ours, ref in unit_case_arrays(folder, case)}
    assert len(errors) >= 3
    where = max(errors, key=errors.get)
    return errors[where], where


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


@pytest.mark.parametrize("ours, ref", [([0.0, np.nan, 0.0], [0.0, 0.0, 0.0]), ([0.0, 0.0], [np.inf, 0.0]),
                                       ([np.nan], [np.nan]), ([-np.inf, 1.0], [-np.inf, 1.0])])
def test_a_nan_or_inf_on_either_side_is_the_worst_error(ours, ref):
    assert scaled_error(np.array(ours), np.array(ref)) == np.inf


CONV_UNITS = [c for c in FIXTURE_UNITS if c["name"].startswith("conv_")]


@pytest.mark.parametrize("case", CONV_UNITS, ids=[c["name"] for c in CONV_UNITS])
def test_a_nan_in_the_weight_gradient_fails_the_golden_case(monkeypatch, case):
    """One NaN in Convolution's weight gradient (compared after finite arrays) fails the case."""
    correct = ConvolutionLayer.backward_cpu

    def nan_in_weight_diff(self, tops, propagate_down, bottoms):
        correct(self, tops, propagate_down, bottoms)
        self.blobs[0].diff.reshape(-1)[-1] = np.nan

    test_unit_case_fixture(case)
    monkeypatch.setattr(ConvolutionLayer, "backward_cpu", nan_in_weight_diff)
    worst, where = run_unit_case(GOLDEN_FIXTURES, case)
    assert worst == np.inf and where.startswith("pdiff/") and where.endswith("/0")
    with pytest.raises(AssertionError, match="inf at pdiff/"):
        test_unit_case_fixture(case)


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


