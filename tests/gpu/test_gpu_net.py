"""Whole GPU nets: training forward/backward against the CPU, weights I/O, host copies, memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import memnet_engine as me
from conftest import GOLDEN_FIXTURES  # tests/conftest.py
from fused_unit_cases import concat_nets_with_top_diffs, training_plan  # tests/fused_unit_cases.py

from .gpu_testing import assert_close, host
from memnet_engine.core.memory_plan import run_backward, run_forward
from memnet_engine.core.weights import read_caffemodel

TRAIN_NET = GOLDEN_FIXTURES / "memnet_m2r2_c8_train.prototxt"
DEPLOY_NET = GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"
INIT = GOLDEN_FIXTURES / "memnet_m2r2_c8_init.caffemodel"
SNAPSHOT = GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_memnet_training_pass_matches_cpu(gpu, dtype, monkeypatch) -> None:
    """Two forward/backward passes (BatchNorm running sums move between them) of the M2R2 net."""
    monkeypatch.chdir(GOLDEN_FIXTURES)
    nets = {device: me.Net(TRAIN_NET, phase=me.TRAIN, weights=INIT, device=device, dtype=dtype)
            for device in ("cpu", "gpu")}
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for step in range(2):
        losses = {}
        for device, net in nets.items():
            net.clear_param_diffs()
            losses[device] = net.forward_backward()
        assert abs(losses["gpu"] - losses["cpu"]) <= tol * max(1.0, abs(losses["cpu"]))
        cpu, ours = nets["cpu"], nets["gpu"]
        for name, blob in cpu.blobs.items():
            assert_close(ours.blobs[name].data, blob.data, tol, f"step {step} data {name}")
            if blob.has_diff and name not in ("data", "label"):
                assert_close(ours.blobs[name].diff, blob.diff, tol, f"step {step} diff {name}")
        for layer_name, params in cpu.params.items():
            for i, p in enumerate(params):
                assert_close(ours.params[layer_name][i].data, p.data, tol, f"{layer_name}/{i} data")
                assert_close(ours.params[layer_name][i].diff, p.diff, tol, f"{layer_name}/{i} diff")


def test_gpu_net_blobs_are_device_arrays_with_host_copies(gpu) -> None:
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT, device="gpu:0")
    assert net.device == "gpu" and net.device_id == 0
    conv = net.params["conv1"][0]
    assert isinstance(conv.data, gpu.ndarray)
    copy = conv.host_data()
    assert type(copy) is np.ndarray and copy.shape == conv.shape
    copy[...] = 0  # a copy: the device array is untouched
    assert float(np.abs(me.to_numpy(conv.data)).max()) > 0


def test_gpu_net_weights_round_trip(gpu, tmp_path: Path) -> None:
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT, device="gpu")
    for params in net.params.values():  # change every weight so the file cannot be the snapshot's
        for p in params:
            p.data[...] = p.data * 0.5 + 1
    path = tmp_path / "saved.caffemodel"
    net.save(path)
    saved = {layer.name: layer for layer in read_caffemodel(str(path)).layer}
    for layer_name, params in net.params.items():
        for i, p in enumerate(params):
            stored = np.asarray(saved[layer_name].blobs[i].data, np.float32).reshape(p.shape)
            np.testing.assert_array_equal(stored, host(p.data))
    again = me.Net(DEPLOY_NET, phase=me.TEST, weights=path, device="gpu")
    for layer_name, params in net.params.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(host(again.params[layer_name][i].data), host(p.data))


def test_inference_keeps_no_backward_state(gpu) -> None:
    """A TEST net runs no backward: layers keep no inputs and intermediates are freed."""
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT, device="gpu")
    image = np.random.default_rng(0).random((1, 1, 16, 14))
    out = net.forward(data=image, keep_intermediates=False)
    assert set(out) == {"HR_recovery"}
    for layer in net.layers:
        for attribute in ("x", "x_norm", "max_index"):
            assert getattr(layer, attribute, None) is None, f"{layer.name} kept {attribute}"
    kept = [name for name, blob in net.blobs.items() if blob.nbytes()]
    assert sorted(kept) == ["HR_recovery", "data"]



def test_inference_memory_holds_only_live_blobs(gpu) -> None:
    """Repeated inference: no per-layer column buffers or kept inputs pile up; freed blobs are not held."""
    if not hasattr(gpu, "memory"):
        pytest.skip("live-byte accounting is the emulator's")
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT, device="gpu")
    net.blobs["data"].reshape((1, 1, 96, 96))
    image = np.random.default_rng(0).random((1, 1, 96, 96))
    peaks = {}
    for keep in (True, False):
        net.forward(data=image, keep_intermediates=keep)
        gpu.reset_peak()
        net.forward(data=image, keep_intermediates=keep)
        peaks[keep] = gpu.memory["peak"]
    all_blobs = sum(blob.count * blob.dtype.itemsize for blob in net.blobs.values())
    assert peaks[True] < all_blobs  # temporaries of a layer are gone before the next one runs
    assert peaks[False] < 0.35 * all_blobs, (peaks, all_blobs)  # M2R2 C8: about 0.26


def test_gpu_blobs_take_host_arrays_like_pycaffe(gpu) -> None:
    net = me.Net(DEPLOY_NET, phase=me.TEST, weights=SNAPSHOT, device="gpu")
    image = np.random.default_rng(3).random(net.blobs["data"].shape).astype(np.float32)
    net.blobs["data"].data[...] = image  # pycaffe style: a NumPy array into a device blob
    assert isinstance(net.blobs["data"].data, gpu.ndarray)
    np.testing.assert_array_equal(net.blobs["data"].host_data(), image)
    net.blobs["data"].diff[:, :, :2] = image[:, :, :2]
    np.testing.assert_array_equal(net.blobs["data"].host_diff()[:, :, :2], image[:, :, :2])
    net.blobs["data"].data = image * 2  # the setter copies host arrays to the device too
    assert isinstance(net.blobs["data"]._data, gpu.ndarray)
    np.testing.assert_array_equal(net.blobs["data"].host_data(), image * 2)


def test_planned_training_pass_equals_pycaffe_pass_on_gpu(gpu, monkeypatch) -> None:
    """Freed blobs, unit outputs recomputed by the fused kernel: the same gradients, bit for bit."""
    monkeypatch.chdir(GOLDEN_FIXTURES)
    planned, pycaffe = (me.Net(TRAIN_NET, phase=me.TRAIN, weights=INIT, device="gpu") for _ in range(2))
    for net, keep in ((planned, False), (pycaffe, True)):
        net.clear_param_diffs()
        net.forward_backward(keep_intermediates=keep)
    for layer_name, params in pycaffe.params.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(host(planned.params[layer_name][i].diff), host(p.diff), f"{layer_name}/{i}")
    assert {name for name, blob in planned.blobs.items() if not blob.data_released} == set(planned.outputs)


@pytest.mark.parametrize("batch", [1, 2])
def test_zero_copy_concat_on_gpu_where_slices_are_contiguous(gpu, batch: int) -> None:
    """Channel slices are contiguous for one image only: there the Eltwise writes into the Concat's output."""
    net, reference = concat_nets_with_top_diffs(batch, device="gpu")
    steps, plan = training_plan(net)
    assert len(plan.placements) == (batch == 1)
    run_forward(net, steps, plan)
    unit_input = net.blobs[next(step.bottoms[0] for step in steps if step.layer.type == "BatchNorm+Scale+ReLU")]
    assert bool(gpu.shares_memory(net.blobs["cat"].data, unit_input.data)) == (batch == 1)
    run_backward(net, steps, plan)
    reference.forward_backward()
    np.testing.assert_array_equal(host(net.blobs["x"].diff), host(reference.blobs["x"].diff))
    for layer_name, params in reference.params.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(host(net.params[layer_name][i].diff), host(p.diff), f"{layer_name}/{i}")
