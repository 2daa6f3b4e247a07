"""Learning-rate policies against Caffe's formulas, rounded to float32 as Caffe rounds them."""
import math

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.lr_policy import check_policy, learning_rate

f32 = np.float32


def solver_param(**fields) -> me.caffe_pb2.SolverParameter:
    stepvalue = fields.pop("stepvalue", ())
    param = me.caffe_pb2.SolverParameter(**fields)
    param.stepvalue.extend(stepvalue)
    return param


def rates(param, iterations):
    step, out = 0, []
    for it in iterations:
        rate, step = learning_rate(param, it, step)
        assert isinstance(rate, np.float32)
        out.append(rate)
    return out


def test_fixed_is_base_lr_as_float32():
    param = solver_param(lr_policy="fixed", base_lr=0.1)
    assert rates(param, [0, 5, 10 ** 6]) == [f32(0.1)] * 3


def test_step_decays_every_stepsize_and_sets_current_step():
    param = solver_param(lr_policy="step", base_lr=0.01, gamma=0.5, stepsize=3)
    expected = [f32(float(f32(0.01)) * float(f32(0.5)) ** (it // 3)) for it in range(10)]
    assert rates(param, range(10)) == expected
    assert learning_rate(param, 7, 0)[1] == 2


def test_step_matches_memnet_paper_schedule():
    param = solver_param(lr_policy="step", base_lr=0.1, gamma=0.1, stepsize=200000)
    got = rates(param, [0, 199999, 200000, 400000])
    want = [f32(0.1), f32(0.1), f32(float(f32(0.1)) * float(f32(0.1))), f32(float(f32(0.1)) * float(f32(0.1)) ** 2)]
    assert got == want
    assert got[2] == pytest.approx(0.01, rel=1e-6)


def test_exp():
    param = solver_param(lr_policy="exp", base_lr=0.2, gamma=0.99)
    assert rates(param, [0, 1, 50]) == [f32(float(f32(0.2)) * float(f32(0.99)) ** k) for k in (0, 1, 50)]


def test_inv_uses_float_arithmetic():
    param = solver_param(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75)
    for it in (0, 1, 1000, 123456):
        inner = f32(1) + f32(1e-4) * f32(it)
        want = f32(0.01) * f32(float(inner) ** -float(f32(0.75)))
        assert rates(param, [it]) == [want]
        assert float(want) == pytest.approx(0.01 * (1 + 1e-4 * it) ** -0.75, rel=1e-6)


def test_multistep_advances_at_most_one_step_per_call():
    param = solver_param(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[2, 4, 5])
    got = rates(param, range(8))
    steps = [0, 0, 1, 1, 2, 3, 3, 3]
    assert got == [f32(float(f32(0.1)) ** s) for s in steps]
    # resuming far beyond several step values catches up one step per call, as in Caffe
    rate, step = learning_rate(param, 100, 0)
    assert step == 1 and rate == f32(0.1)


def test_poly():
    param = solver_param(lr_policy="poly", base_lr=0.5, power=2.0, max_iter=10)
    for it in (0, 3, 10):
        assert rates(param, [it]) == [f32(0.5) * f32((1 - f32(it) / f32(10)) ** 2)]
    assert float(rates(param, [3])[0]) == pytest.approx(0.5 * 0.7 ** 2, rel=1e-6)


def test_sigmoid():
    param = solver_param(lr_policy="sigmoid", base_lr=0.1, gamma=-0.5, stepsize=4)
    for it in (0, 4, 9):
        want = 0.1 / (1 + math.exp(0.5 * (it - 4)))
        assert float(rates(param, [it])[0]) == pytest.approx(want, rel=1e-6)
    assert rates(param, [4]) == [f32(0.05)]
    far = solver_param(lr_policy="sigmoid", base_lr=0.1, gamma=-1.0, stepsize=0)
    assert rates(far, [100000]) == [f32(0)]  # expf overflows to inf, as in C


@pytest.mark.parametrize("fields, message", [
    (dict(lr_policy="cosine"), "unknown lr_policy 'cosine'"),
    (dict(), "unknown lr_policy ''"),
    (dict(lr_policy="step", stepsize=0), "stepsize > 0"),
    (dict(lr_policy="exp", gamma=-1), "gamma >= 0"),
    (dict(lr_policy="poly", max_iter=0), "max_iter > 0"),
])
def test_bad_policies_are_clear_errors(fields, message):
    with pytest.raises(me.MemnetError, match=message):
        check_policy(solver_param(**fields))
