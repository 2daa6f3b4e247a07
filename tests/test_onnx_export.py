"""ONNX export: onnxruntime (CPU) gives the engine's outputs, and Caffe's, at more than one image size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me
from memnet_engine.cli import convert_weights
from memnet_engine.core.gradcheck import scaled_error
from memnet_engine.core.onnx_export import IR_VERSION, OPSET, export_onnx, onnx_model

from conftest import GOLDEN_FIXTURES, REPO, shared_golden

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # max |onnxruntime - engine| / max(1, max |engine|)
UNITS = [c for c in json.loads((GOLDEN_FIXTURES / "index.json").read_text())["units"] if c["name"] != "euclidean"]


def session(model) -> "ort.InferenceSession":
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def engine_outputs(net: me.Net, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    for name, array in inputs.items():
        net.blobs[name].reshape(array.shape)
    out = net.forward(**inputs)
    return [me.to_numpy(out[name]).copy() for name in net.outputs]


def assert_same_outputs(net: me.Net, model, inputs: dict[str, np.ndarray]) -> float:
    """onnxruntime's outputs equal the engine's (scaled error <= TOLERANCE); returns the worst error."""
    theirs = session(model).run(None, inputs)
    ours = engine_outputs(net, inputs)
    assert len(theirs) == len(ours) == len(net.outputs)
    errors = [scaled_error(t, o) for t, o in zip(theirs, ours)]
    assert all(t.shape == o.shape for t, o in zip(theirs, ours))
    assert max(errors) <= TOLERANCE, dict(zip(net.outputs, errors))
    return max(errors)


def random_inputs(net: me.Net, grow: tuple[int, int] = (0, 0), seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the net's shapes, height and width grown by ``grow``."""
    rs = np.random.default_rng(seed)
    inputs = {}
    for name in net.inputs:
        shape = list(net.blobs[name].shape)
        if len(shape) == 4:
            shape[2:4] = [shape[2] + grow[0], shape[3] + grow[1]]
        inputs[name] = rs.standard_normal(shape).astype(np.float32)
    return inputs


def net_from_text(text: str) -> me.Net:
    net = me.Net(text_format.Parse(text, me.caffe_pb2.NetParameter()), phase=me.TEST)
    rs = np.random.default_rng(3)
    for layer in net.layers:  # stored BatchNorm statistics: sums, their positive variances and a factor s
        if layer.type == "BatchNorm":
            c = layer.blobs[0].shape[0]
            for blob, value in zip(layer.blobs, (rs.standard_normal(c) * 4, rs.random(c) * 8 + 1, [4.0])):
                blob.data[...] = np.asarray(value, np.float32)
    return net


# ---------------------------------------------------------------------- Caffe's reference data
@pytest.mark.parametrize("case", UNITS, ids=[c["name"] for c in UNITS])
def test_golden_unit_nets_match_the_engine_and_caffe(case):
    name = case["name"]
    net = me.Net(str(GOLDEN_FIXTURES / f"{name}.prototxt"), phase=me.TEST,
                 weights=str(GOLDEN_FIXTURES / f"{name}.caffemodel"))
    model = onnx_model(net)
    z = np.load(GOLDEN_FIXTURES / f"{name}.npz")
    inputs = {blob: z[f"data/{blob}"].astype(np.float32) for blob in case["inputs"]}
    assert_same_outputs(net, model, inputs)
    assert_same_outputs(net, model, random_inputs(net, grow=(3, 2)))
    uses_batch_statistics = case["phase"] == "TRAIN" and any(layer.type == "BatchNorm" for layer in net.layers)
    if not uses_batch_statistics:  # Caffe computed these outputs as the TEST net does
        theirs = session(model).run(None, inputs)
        for output, array in zip(net.outputs, theirs):
            assert scaled_error(array, z[f"data/{output}"]) <= TOLERANCE, output


def memnet_export_errors(folder, name: str, iters: int) -> list[float]:
    """Caffe's deploy output at its input, then the engine's at two other sizes, against onnxruntime."""
    net = me.Net(str(folder / f"{name}_deploy.prototxt"), phase=me.TEST,
                 weights=str(folder / f"{name}_iter_{iters}.caffemodel"))
    model = onnx_model(net)
    z = np.load(folder / f"{name}.npz")
    caffe_input = z["deploy/input"].astype(np.float32)
    errors = [scaled_error(session(model).run(None, {"data": caffe_input})[0], z["deploy/HR_recovery"])]
    rs = np.random.default_rng(7)
    for shape in ((1, 1, 31, 31), (2, 1, 45, 38)):
        errors.append(assert_same_outputs(net, model, {"data": rs.random(shape, dtype=np.float32)}))
    assert max(errors) <= TOLERANCE, errors
    return errors


def test_memnet_m2r2_with_caffes_weights():
    memnet_export_errors(GOLDEN_FIXTURES, "memnet_m2r2_c8", 4)


def test_memnet_m6r6_deploy_with_caffes_weights():
    memnet_export_errors(shared_golden(), "memnet_m6r6_c64", 2)


def test_the_model_has_dynamic_sizes_shared_weights_and_folded_batch_norms():
    net = me.Net(str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt"), phase=me.TEST,
                 weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))
    model = onnx_model(net)
    assert model.ir_version == IR_VERSION and [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "data" and dims == ["batch", 1, "height", "width"]
    assert [o.name for o in model.graph.output] == ["HR_recovery"]
    ops = [node.op_type for node in model.graph.node]
    batch_norms = sum(layer.type == "BatchNorm" for layer in net.layers)
    assert ops.count("BatchNormalization") == batch_norms and "Add" not in ops  # every Scale folded
    assert ops.count("Conv") == sum(layer.type == "Convolution" for layer in net.layers)
    names = [i.name for i in model.graph.initializer]
    assert len(names) == len(set(names)) and {"conv01_wa", "conv01_ba", "Recon_w", "Recon_b"} <= set(names)
    assert names.count("conv01_wa") == 1  # the recursions share one weight tensor, as in Caffe


# ---------------------------------------------------------------------- nets beyond MemNet
X = 'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: {c} dim: 5 dim: 6 }} }} }}\n'
BN = 'layer {{ name: "{0}" type: "BatchNorm" bottom: "{1}" top: "{2}" {3} }}\n'
SCALE = ('layer {{ name: "{0}" type: "Scale" bottom: "{1}" top: "{2}" scale_param {{ {3} filler {{ type: "gaussian" }} '
         'bias_filler {{ type: "gaussian" }} }} }}\n')
CONV = ('layer {{ name: "{0}" type: "Convolution" bottom: "{1}" top: "{2}" convolution_param {{ num_output: 4 {3} '
        'weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "gaussian" }} }} }}\n')
NETS = {
    "bn_read_twice": X.format(c=3) + BN.format("bn", "x", "h", "") + SCALE.format("sc", "h", "s", "bias_term: true")
    + 'layer { name: "sum" type: "Eltwise" bottom: "h" bottom: "s" top: "y" }\n',
    "bn_alone_then_relu_in_place": X.format(c=3) + BN.format("bn", "x", "h", "batch_norm_param { eps: 0.01 }")
    + 'layer { name: "r" type: "ReLU" bottom: "h" top: "h" relu_param { negative_slope: 0.2 } }\n',
    "bn_scale_without_bias_not_in_place": X.format(c=3) + BN.format("bn", "x", "h", "")
    + SCALE.format("sc", "h", "s", "bias_term: false"),
    "scale_by_a_second_bottom": X.format(c=3)
    + 'layer { name: "w" type: "Input" top: "w" input_param { shape { dim: 2 dim: 3 } } }\n'
    + 'layer { name: "sc" type: "Scale" bottom: "x" bottom: "w" top: "y" scale_param { axis: 0 } }\n',
    "scale_scalar_and_channel_bias": X.format(c=3) + SCALE.format("s0", "x", "a", "num_axes: 0 bias_term: true")
    + SCALE.format("s1", "a", "y", "axis: -3 bias_term: true"),
    "eltwise_three_way": X.format(c=2) + CONV.format("c1", "x", "p", "kernel_size: 1 group: 2")
    + CONV.format("c2", "x", "q", "kernel_size: 3 pad: 1")
    + 'layer { name: "pm" type: "Eltwise" bottom: "x" bottom: "x" bottom: "x" top: "m" '
      'eltwise_param { operation: PROD } }\n'
    + 'layer { name: "mx" type: "Eltwise" bottom: "p" bottom: "q" bottom: "p" top: "n" '
      'eltwise_param { operation: MAX } }\n'
    + 'layer { name: "cat" type: "Concat" bottom: "m" bottom: "n" top: "y" concat_param { axis: -3 } }\n',
    "explicit_split_and_two_outputs": X.format(c=2)
    + 'layer { name: "sp" type: "Split" bottom: "x" top: "x1" top: "x2" }\n'
    + CONV.format("c", "x1", "y", "kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride: 2 dilation: 2")
    + 'layer { name: "r" type: "ReLU" bottom: "x2" top: "z" }\n',
    "in_place_on_the_input": X.format(c=2) + 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n',
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_other_nets_match_the_engine_at_two_sizes(name):
    net = net_from_text(NETS[name])
    model = onnx_model(net)
    assert_same_outputs(net, model, random_inputs(net))
    assert_same_outputs(net, model, random_inputs(net, grow=(4, 7), seed=1))


@pytest.mark.parametrize("text, message", [
    (X.format(c=1) + 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n'
     'layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "loss" }',
     "layer 'loss': type EuclideanLoss has no ONNX export"),
    (X.format(c=3) + BN.format("bn", "x", "y", "batch_norm_param { use_global_stats: false }"),
     "layer 'bn': a BatchNorm using batch statistics"),
])
def test_what_cannot_be_exported_is_a_clear_error(text, message):
    with pytest.raises(me.NetError, match=message):
        onnx_model(net_from_text(text))


def test_without_the_onnx_package_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(me.MemnetError, match=r"pip install 'memnet-engine\[onnx\]'"):
        onnx_model(net_from_text(X.format(c=1)))


# ---------------------------------------------------------------------- the command line
def test_convert_weights_writes_the_onnx_model(tmp_path):
    """The documented form: python tools/convert_weights.py W.caffemodel model.onnx --net DEPLOY.prototxt"""
    out = tmp_path / "model.onnx"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "convert_weights.py"),
                             str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"), str(out), "--net",
                             str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt")],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"ONNX opset {OPSET}" in result.stderr and "dynamic batch, height and width" in result.stderr
    z = np.load(GOLDEN_FIXTURES / "memnet_m2r2_c8.npz")
    theirs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"data": z["deploy/input"].astype(np.float32)})[0]
    assert scaled_error(theirs, z["deploy/HR_recovery"]) <= TOLERANCE


def test_convert_weights_exports_from_a_caffe_named_npz(tmp_path):
    arrays = tmp_path / "w.npz"
    assert convert_weights.main([str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"), str(arrays)]) == 0
    out = tmp_path / "m.onnx"
    deploy = str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt")
    assert convert_weights.main([str(arrays), str(out), "--net", deploy]) == 0
    net = me.Net(deploy, phase=me.TEST, weights=str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))
    assert_same_outputs(net, onnx.load(str(out)), random_inputs(net, grow=(5, 1)))


@pytest.mark.parametrize("argv, code, message", [
    (["w.caffemodel", "m.onnx"], 2, "an .onnx output needs the deploy net: --net DEPLOY.prototxt"),
    ([str(GOLDEN_FIXTURES / "conv_basic.caffemodel"), "m.onnx", "--net",
      str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt")], 1, "has no weights for 41 layer"),
])
def test_convert_weights_onnx_mistakes(tmp_path, capsys, argv, code, message):
    argv = [str(tmp_path / a) if a.endswith("m.onnx") else a for a in argv]
    try:
        assert convert_weights.main(argv) == code
    except SystemExit as exit_info:
        assert exit_info.code == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_writes_atomically(tmp_path):
    net = net_from_text(X.format(c=1) + 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')
    path = tmp_path / "r.onnx"
    model = export_onnx(net, path)
    assert onnx.load(str(path)) == model and sorted(os.listdir(tmp_path)) == ["r.onnx"]
