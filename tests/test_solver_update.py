"""SGD update rule against hand-written formulas on a one-layer linear net.

The net is y_hat = W x + b (a 1x1 Convolution on 1x1 images) with a EuclideanLoss, so the
gradients are known in closed form: dW = (y_hat - y)^T x / N, db = sum(y_hat - y) / N.
"""
import logging

import numpy as np
import pytest

import memnet_engine as me

N, C_IN, C_OUT = 4, 3, 2
RS = np.random.default_rng(0)
X = RS.standard_normal((N, C_IN)).astype(np.float32)
Y = RS.standard_normal((N, C_OUT)).astype(np.float32)
W0 = RS.standard_normal((C_OUT, C_IN)).astype(np.float32)
B0 = RS.standard_normal(C_OUT).astype(np.float32)

NET = """
name: "linear"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {n} dim: {ci} dim: 1 dim: 1 }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: {n} dim: {co} dim: 1 dim: 1 }} }} }}
layer {{ name: "fc" type: "Convolution" bottom: "x" top: "fc" {params}
  convolution_param {{ num_output: {co} kernel_size: 1 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }}
"""


def make_solver(solver_text: str, params: str = "", x=X, y=Y) -> me.SGDSolver:
    param = me.caffe_pb2.SolverParameter()
    me.core.prototxt.parse_text(solver_text, param)
    me.core.prototxt.parse_text(NET.format(n=len(x), ci=C_IN, co=C_OUT, params=params), param.net_param)
    param.snapshot_after_train = False
    solver = me.SGDSolver(param)
    fc = solver.net.params["fc"]
    fc[0].data[...] = W0.reshape(C_OUT, C_IN, 1, 1)
    fc[1].data[...] = B0
    solver.net.blobs["x"].data[...] = x.reshape(len(x), C_IN, 1, 1)
    solver.net.blobs["y"].data[...] = y.reshape(len(y), C_OUT, 1, 1)
    return solver


def grads(w, b, x=X, y=Y):
    r = x.astype(np.float64) @ w.T + b - y
    return r.T @ x / len(x), r.sum(0) / len(x), (r ** 2).sum() / (2 * len(x))


def weights(solver):
    fc = solver.net.params["fc"]
    return fc[0].data.reshape(C_OUT, C_IN).astype(np.float64), fc[1].data.astype(np.float64)


def reference(steps, lr=0.1, momentum=0.0, wd=0.0, lr_mult=(1, 1), decay_mult=(1, 1), l1=False, clip=-1.0,
              adjustable=False):
    """Caffe's update in float64, written from its definition."""
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    hist = [np.zeros_like(w), np.zeros_like(b)]
    for _ in range(steps):
        g = list(grads(w, b)[:2])
        if clip >= 0:
            threshold = clip / lr if adjustable else clip
            norm = np.sqrt(sum((gi ** 2).sum() for gi in g))
            if norm > threshold:
                g = [gi * threshold / norm for gi in g]
        params = [w, b]
        for i in range(2):
            decay = wd * decay_mult[i]
            g[i] = g[i] + decay * (np.sign(params[i]) if l1 else params[i])
            hist[i] = lr * lr_mult[i] * g[i] + momentum * hist[i]
        w, b = w - hist[0], b - hist[1]
    return w, b, hist


def assert_matches(solver, ref, rtol=2e-5):
    w, b = weights(solver)
    np.testing.assert_allclose(w, ref[0], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(b, ref[1], rtol=rtol, atol=1e-6)
    fc = solver.net.params["fc"]
    # after a step the diff holds the update value, which is the momentum history
    np.testing.assert_allclose(fc[0].diff.reshape(C_OUT, C_IN), ref[2][0], rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(solver.history[1], ref[2][1], rtol=rtol, atol=1e-7)


def test_plain_sgd_step_is_lr_times_gradient():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed"')
    solver.step(1)
    gw, gb, _ = grads(W0, B0)
    w, b = weights(solver)
    np.testing.assert_allclose(w, W0 - 0.1 * gw, rtol=1e-5)
    np.testing.assert_allclose(b, B0 - 0.1 * gb, rtol=1e-5)
    assert solver.iter == 1


def test_momentum_accumulates_history():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9')
    solver.step(3)
    assert_matches(solver, reference(3, momentum=0.9))


def test_l2_weight_decay_with_decay_mult_and_lr_mult():
    params = "param { lr_mult: 2 decay_mult: 0.5 } param { lr_mult: 0.5 decay_mult: 3 }"
    solver = make_solver('base_lr: 0.05 lr_policy: "fixed" momentum: 0.5 weight_decay: 0.1', params)
    solver.step(2)
    assert_matches(solver, reference(2, lr=0.05, momentum=0.5, wd=0.1, lr_mult=(2, 0.5), decay_mult=(0.5, 3)))


def test_l1_regularization_adds_decay_times_sign():
    solver = make_solver('base_lr: 0.05 lr_policy: "fixed" weight_decay: 0.2 regularization_type: "L1"')
    solver.step(2)
    assert_matches(solver, reference(2, lr=0.05, wd=0.2, l1=True))


def test_zero_lr_mult_freezes_the_parameter_and_its_history():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.1',
                         "param { lr_mult: 1 } param { lr_mult: 0 }")
    solver.step(2)
    assert np.array_equal(solver.net.params["fc"][1].data, B0)
    assert not solver.history[1].any() and not solver.net.params["fc"][1].diff.any()


@pytest.mark.parametrize("clip", [0.05, 1e6, -1.0])
def test_clip_gradients_scales_the_global_norm(clip):
    solver = make_solver(f'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 clip_gradients: {clip}')
    solver.step(2)
    assert_matches(solver, reference(2, momentum=0.9, clip=clip))
    gw, gb, _ = grads(W0, B0)
    assert np.sqrt((gw ** 2).sum() + (gb ** 2).sum()) > 0.05  # so the small clip really clips


def test_clipping_happens_before_weight_decay():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.5 clip_gradients: 0.01')
    solver.step(1)
    assert_matches(solver, reference(1, wd=0.5, clip=0.01))


def test_adjustable_clip_threshold_is_clip_over_lr():
    text = 'base_lr: 0.1 lr_policy: "fixed" clip_gradients: 0.01 adjustable_clip: true'
    gw, gb, _ = grads(W0, B0)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert 0.01 < norm and 0.01 / 0.1 < norm  # the threshold 0.1 still clips this gradient
    solver = make_solver(text)
    solver.step(1)
    assert_matches(solver, reference(1, clip=0.01, adjustable=True))
    stock = make_solver('base_lr: 0.1 lr_policy: "fixed" clip_gradients: 0.01')
    stock.step(1)
    assert not np.allclose(weights(stock)[0], weights(solver)[0])
    loose = make_solver('base_lr: 0.001 lr_policy: "fixed" clip_gradients: 0.01 adjustable_clip: true')
    loose.step(1)  # threshold 10 > norm: no clipping at all
    assert_matches(loose, reference(1, lr=0.001))


def test_adjustable_clip_follows_the_lr_schedule():
    solver = make_solver('base_lr: 0.1 lr_policy: "step" gamma: 0.1 stepsize: 1 clip_gradients: 0.01 '
                         'adjustable_clip: true')
    solver.step(1)
    w1, b1 = weights(solver)
    solver.step(1)  # lr 0.01: threshold 1
    gw, gb, _ = grads(w1, b1)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    factor = min(1.0, 1.0 / norm)
    w2, b2 = weights(solver)
    np.testing.assert_allclose(w2, w1 - 0.01 * factor * gw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b2, b1 - 0.01 * factor * gb, rtol=1e-5, atol=1e-7)


def test_iter_size_averages_gradients_of_its_passes(tmp_path):
    """batch 2 x iter_size 2 gives the update of one batch of 4 (the Euclidean loss averages over the batch)."""
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = X.reshape(N, C_IN, 1, 1)
        f["y"] = Y.reshape(N, C_OUT, 1, 1)
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5") + "\n")

    def run(batch, iter_size):
        param = me.caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.01,
                                             iter_size=iter_size, snapshot_after_train=False)
        me.core.prototxt.parse_text(f"""
            layer {{ name: "d" type: "HDF5Data" top: "x" top: "y"
                    hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: {batch} }} }}
            layer {{ name: "fc" type: "Convolution" bottom: "x" top: "fc" convolution_param {{ num_output: {C_OUT}
                    kernel_size: 1 }} }}
            layer {{ name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }}""", param.net_param)
        solver = me.SGDSolver(param)
        solver.net.params["fc"][0].data[...] = W0.reshape(C_OUT, C_IN, 1, 1)
        solver.net.params["fc"][1].data[...] = B0
        losses = []
        solver.iteration_hooks.append(lambda s: losses.append(s.loss))
        solver.step(3)
        return weights(solver), losses

    (w4, b4), loss4 = run(4, 1)
    (w2, b2), loss2 = run(2, 2)
    np.testing.assert_allclose(w2, w4, rtol=1e-5)
    np.testing.assert_allclose(b2, b4, rtol=1e-5)
    np.testing.assert_allclose(loss2, loss4, rtol=1e-5)
    assert loss4[0] == pytest.approx(grads(W0, B0)[2], rel=1e-5)


def test_average_loss_smooths_over_the_last_iterations():
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" average_loss: 3')
    seen = []
    solver.iteration_hooks.append(lambda s: seen.append((s.loss, s.smoothed_loss)))
    solver.step(5)
    losses = [loss for loss, _ in seen]
    for i, (_, smoothed) in enumerate(seen):
        window = losses[max(0, i - 2): i + 1]
        assert smoothed == pytest.approx(np.mean(window), rel=1e-5)
    assert losses[0] == pytest.approx(grads(W0, B0)[2], rel=1e-5)
    assert losses[-1] < losses[0]


def test_display_logs_caffe_lines(caplog):
    solver = make_solver('base_lr: 0.1 lr_policy: "fixed" display: 2')
    with caplog.at_level(logging.INFO, logger="memnet_engine.core.solver"):
        solver.step(3)
    text = caplog.text
    assert "Iteration 0, lr = 0.1" in text and "Iteration 2, lr = 0.1" in text
    assert "Iteration 1, lr" not in text
    loss0 = grads(W0, B0)[2]
    assert "Iteration 0 (" in text and f"), loss = {loss0:.6g}" in text
    assert f"Train net output #0: loss = {loss0:.6g} (* 1 = {loss0:.6g} loss)" in text
