"""Flat learnable state: every parameter blob views its slot of the net's one data and one diff array,
and nothing that loads or assigns parameters replaces those views."""
import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from conftest import FIXTURES, GOLDEN_FIXTURES

M2R2 = "memnet_m2r2_c8"
NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 2 dim: 5 dim: 5 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "y" param { name: "w" lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "y" top: "y" }
layer { name: "c2" type: "Convolution" bottom: "y" top: "z" param { name: "w" share_mode: PERMISSIVE }
        param { lr_mult: 2 } convolution_param { num_output: 4 group: 2 kernel_size: 3 pad: 1 } }
layer { name: "c3" type: "Convolution" bottom: "z" top: "out" param { lr_mult: 0.5 decay_mult: 0 }
        param { lr_mult: 2 } convolution_param { num_output: 1 kernel_size: 1 } }
"""


def address(array) -> int:
    return array.__array_interface__["data"][0]


def replaced_views(net: me.Net) -> list[str]:
    """Parameter blobs whose data or diff is not (any more) a view of their slot of the flat arrays."""
    buffer, bad = net.param_buffer, []
    slots = {id(p.blob): k for k, p in enumerate(net.learnable_params)}
    for layer, i, k in net._param_users:
        blob = layer.blobs[i]
        for what, flat in (("data", buffer.data), ("diff", buffer.diff)):
            array, slot = getattr(blob, what), buffer.slot(flat, k)
            if address(array) != address(slot) or array.size != slot.size:
                bad.append(f"{layer.name}/{i} {what}")
        assert slots.get(id(blob), k) == k
    return bad


def test_parameters_view_one_flat_data_and_one_flat_diff():
    net = me.Net(text_format.Parse(NET, me.caffe_pb2.NetParameter()), phase=me.TRAIN)
    buffer = net.param_buffer
    assert buffer.size == sum(p.blob.count for p in net.learnable_params) == 36 + 2 + 5 + 4 + 4 + 1
    assert replaced_views(net) == []
    c1, c2 = net.params["c1"][0], net.params["c2"][0]
    assert c2.shape == (4, 1, 3, 3) and c1.shape == (2, 2, 3, 3)  # permissive sharing: one slot, two shapes
    c2.data[0, 0, 0, 0] = 7.0
    c2.diff[0, 0, 0, 1] = 3.0
    assert c1.data[0, 0, 0, 0] == 7.0 and c1.diff[0, 0, 0, 1] == 3.0
    net.clear_param_diffs()
    assert not buffer.diff.any() and not c2.diff.any()
    # runs of equal multipliers, learned first, BatchNorm's statistics (lr_mult 0) last
    assert [(r.lr_mult, r.decay_mult, r.end - r.start) for r in buffer.runs] == [(1, 1, 36), (2, 1, 2 + 4 + 1),
                                                                                (0.5, 0, 4)]
    assert buffer.learned == buffer.size - 5
    with pytest.raises(ValueError, match="cannot be reshaped"):
        c1.reshape((3, 3))


def test_assignments_and_loading_write_into_the_views(tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN_FIXTURES)
    solver = me.SGDSolver(f"{M2R2}_solver.prototxt")
    net = solver.net
    net.copy_from(f"{M2R2}_init.caffemodel")
    assert replaced_views(net) == []
    blob = net.learnable_params[0].blob
    blob.data = np.full(blob.shape, 0.25, np.float32)
    blob.diff = np.full(blob.shape, 0.5, np.float32)
    assert (net.param_buffer.slot(net.param_buffer.data, 0) == 0.25).all()
    assert (net.param_buffer.slot(net.param_buffer.diff, 0) == 0.5).all()
    solver.step(2)  # BatchNorm assigns its running sums; the update writes the flat arrays
    solver.param.snapshot_prefix = str(tmp_path / "s")
    state = solver.snapshot()
    other = me.SGDSolver(f"{M2R2}_solver.prototxt")
    other.restore(state)
    for net_ in (net, other.net):
        assert replaced_views(net_) == []
    for a, b in zip(other.net.learnable_params, net.learnable_params):
        assert np.array_equal(a.blob.data, b.blob.data)
    for k, history in enumerate(other.history):
        assert np.shares_memory(history, other.rule.history) and np.array_equal(history, solver.history[k])
    # the check above does catch a replaced view
    blob._data = blob._data.copy()
    assert replaced_views(net) == [f"{net.learnable_params[0].owner}/0 data"]


def test_test_nets_use_the_train_nets_parameter_views(monkeypatch):
    monkeypatch.chdir(FIXTURES / "solver")
    solver = me.SGDSolver("tiny_solver.prototxt")
    test_net = solver.test_nets[0]
    for name, blobs in test_net.params.items():
        for mine, trained in zip(blobs, solver.net.params[name]):
            assert mine is trained
    solver.step(1)
    assert replaced_views(solver.net) == []


def test_frozen_parameters_keep_a_zero_diff_and_history_even_with_force_backward():
    """Caffe updates lr_mult 0 parameters by zero, which leaves their diff zero after the step."""
    param = me.caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", momentum=0.9, weight_decay=0.1,
                                         clip_gradients=0.5, snapshot_after_train=False)
    loss = ('layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "t" top: "loss" }\n')
    text_format.Parse(NET.replace('lr_mult: 0.5 decay_mult: 0', 'lr_mult: 0') + loss + "force_backward: true",
                      param.net_param)
    solver = me.SGDSolver(param)
    rs = np.random.default_rng(0)
    for name in ("x", "t"):
        solver.net.blobs[name].data[...] = rs.standard_normal(solver.net.blobs[name].shape)
    frozen = [k for k, p in enumerate(solver.net.learnable_params) if p.lr_mult == 0]
    assert len(frozen) == 4 and solver.net.param_buffer.frozen_diffs_written  # c3's weights and BatchNorm's
    c3 = solver.net.params["c3"][0]
    before = c3.data.copy()
    solver.net.forward_range()
    solver.net.clear_param_diffs()
    solver.net.backward_range()
    assert c3.diff.any()  # force_backward: the layer does compute it
    solver.step(2)
    assert np.array_equal(c3.data, before)
    for k in frozen:
        assert not solver.net.learnable_params[k].blob.diff.any() and not solver.history[k].any()
