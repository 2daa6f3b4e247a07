"""Weights conversion: caffemodel <-> npz round trips, Caffe byte layout, torch-style export, clear errors."""
from __future__ import annotations

import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import memnet_engine as me
from memnet_engine.core.convert import load_npz, torch_state_dict
from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.core.prototxt import read_net_param

from conftest import GOLDEN_FIXTURES

from memnet_engine.cli import convert_weights

DEPLOY = str(GOLDEN_FIXTURES / "memnet_m2r2_c8_deploy.prototxt")
WEIGHTS = str(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel")
GOLDEN = GOLDEN_FIXTURES / "memnet_m2r2_c8.npz"


def caffe_model(path) -> pb.NetParameter:
    return pb.NetParameter.FromString(open(path, "rb").read())


def blob_bytes(model: pb.NetParameter) -> dict:
    return {layer.name: [b.SerializeToString() for b in layer.blobs] for layer in model.layer if layer.blobs}


def run(*argv) -> int:
    return convert_weights.main([str(a) for a in argv])


def test_caffemodel_to_npz_and_back_gives_byte_identical_blobs(tmp_path):
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    assert run(tmp_path / "w.npz", tmp_path / "back.caffemodel") == 0
    original, back = caffe_model(WEIGHTS), caffe_model(tmp_path / "back.caffemodel")
    assert blob_bytes(back) == blob_bytes(original)  # same shapes, same packed float32 data, same field numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.caffemodel", "w.npz"]  # no temp files left


def test_npz_holds_every_blob_under_layer_slash_index_in_file_order(tmp_path):
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    expected = [(f"{layer.name}/{i}", tuple(b.shape.dim)) for layer in caffe_model(WEIGHTS).layer
                for i, b in enumerate(layer.blobs)]
    with np.load(tmp_path / "w.npz", allow_pickle=False) as npz:
        assert [(k, npz[k].shape) for k in npz.files] == expected
        conv = next(layer for layer in caffe_model(WEIGHTS).layer if layer.name == "conv_transition_02")
        np.testing.assert_array_equal(npz["conv_transition_02/0"].ravel(), np.array(conv.blobs[0].data, np.float32))


def test_converted_caffemodel_loads_in_net_and_reproduces_caffes_deploy_output(tmp_path):
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    assert run(tmp_path / "w.npz", tmp_path / "w.caffemodel") == 0
    golden = np.load(GOLDEN)
    net = me.Net(DEPLOY, phase=me.TEST, weights=str(tmp_path / "w.caffemodel"))
    out = net.forward(data=golden["deploy/input"])["HR_recovery"]
    ref = golden["deploy/HR_recovery"]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_net_option_writes_full_layer_definitions_in_net_order(tmp_path):
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    assert run(tmp_path / "w.npz", tmp_path / "w.caffemodel", "--net", DEPLOY) == 0
    written, net = caffe_model(tmp_path / "w.caffemodel"), read_net_param(DEPLOY)
    assert [layer.name for layer in written.layer] == [layer.name for layer in net.layer]
    for layer, definition in zip(written.layer, net.layer):
        stripped = pb.LayerParameter()
        stripped.CopyFrom(layer)
        del stripped.blobs[:]
        assert stripped == definition
    assert blob_bytes(written) == blob_bytes(caffe_model(WEIGHTS))


def test_npz_from_another_net_is_a_clear_mismatch(tmp_path, capsys):
    other = tmp_path / "basic.prototxt"
    other.write_text(str(memnet_deploy_net(MemNetConfig(2, 2, 8, multi_supervised=False))))
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    assert run(tmp_path / "w.npz", tmp_path / "w.caffemodel", "--net", other) == 1
    assert "layer 'bn_conv_end_01' is not in net 'MemNet_M2R2_12C8_basic' (5 such layer(s))" in capsys.readouterr().err
    assert not (tmp_path / "w.caffemodel").exists()


def test_double_precision_blobs_stay_double(tmp_path):
    model = pb.NetParameter()
    blob = model.layer.add(name="c", type="Convolution").blobs.add()
    blob.shape.dim.extend([2, 3])
    values = np.linspace(-1, 1, 6) / 3
    blob.double_data.extend(values.tolist())
    (tmp_path / "d.caffemodel").write_bytes(model.SerializeToString())
    assert run(tmp_path / "d.caffemodel", tmp_path / "d.npz") == 0
    assert load_npz(str(tmp_path / "d.npz"))["c/0"].dtype == np.float64
    assert run(tmp_path / "d.npz", tmp_path / "back.caffemodel") == 0
    assert blob_bytes(caffe_model(tmp_path / "back.caffemodel")) == blob_bytes(model)


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(open(WEIGHTS, "rb").read()[:5000]), "truncated or corrupt .caffemodel"),
    (lambda p: p.write_bytes(b""), "holds no layers"),
])
def test_bad_caffemodels_are_one_clear_error(tmp_path, capsys, make, message):
    make(tmp_path / "bad.caffemodel")
    assert run(tmp_path / "bad.caffemodel", tmp_path / "out.npz") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(open(GOLDEN, "rb").read()[:2000]), "truncated or corrupt .npz"),
    (lambda p: write_npz(p, **{"a/0": np.array([{"x": 1}], dtype=object)}), "pickled objects, which are refused"),
    (lambda p: write_npz(p, **{"conv1.weight": np.zeros(3, np.float32)}), "is not '<layer>/<blob index>'"),
    (lambda p: write_npz(p, **{"a/0": np.zeros(3, np.float32), "a/2": np.zeros(3, np.float32)}),
     "layer 'a' has blobs [0, 2]"),
    (lambda p: write_npz(p, **{"a/0": np.arange(3)}), "has dtype int64"),
])
def test_bad_npz_files_are_one_clear_error(tmp_path, capsys, make, message):
    make(tmp_path / "bad.npz")
    assert run(tmp_path / "bad.npz", tmp_path / "out.caffemodel") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["w.h5", "o.npz"], [WEIGHTS, "o.txt"], [WEIGHTS, "o.caffemodel", "--torch"],
                                  [WEIGHTS, "o.npz", "--net", DEPLOY]])
def test_unsupported_extensions_and_option_combinations_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_weights.main(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------- torch-style export
def exported_state(tmp_path) -> dict:
    assert run(WEIGHTS, tmp_path / "t.npz", "--torch") == 0
    return load_npz(str(tmp_path / "t.npz"))


def test_torch_names_follow_layer_types_and_shared_param_names(tmp_path):
    state = exported_state(tmp_path)
    expected = []
    for layer in read_net_param(DEPLOY).layer:
        if layer.type == "BatchNorm":
            expected += [f"{layer.name}.running_mean", f"{layer.name}.running_var"]
        elif layer.type == "Scale":
            expected += [f"{layer.name}.weight"] + ([f"{layer.name}.bias"] if layer.scale_param.bias_term else [])
        elif layer.type == "Convolution":
            named = [p.name for p in layer.param]
            expected += [n for n in named if n not in expected] if any(named) else \
                [f"{layer.name}.weight", f"{layer.name}.bias"]
    assert list(state) == expected
    caffe = {layer.name: layer for layer in caffe_model(WEIGHTS).layer}
    np.testing.assert_array_equal(state["conv02_wb"].ravel(), np.array(caffe["conv02_02_b"].blobs[0].data, np.float32))
    np.testing.assert_array_equal(state["Recon_b"], np.array(caffe["conv_end_01"].blobs[1].data, np.float32))
    assert state["conv1.weight"].shape == (8, 1, 3, 3) and state["weight_output_end_02.weight"].shape == (1,)


def test_torch_batchnorm_statistics_reproduce_the_engine(tmp_path):
    """relu(scale(bn(conv1))) computed from the exported names equals the engine's TEST-phase output."""
    state = exported_state(tmp_path)
    net = me.Net(DEPLOY, phase=me.TEST, weights=WEIGHTS)
    net.forward(data=np.load(GOLDEN)["deploy/input"])
    x = net.blobs["conv1"].data.astype(np.float64)
    per_channel = {k: v.reshape(1, -1, 1, 1) for k, v in state.items() if k.startswith(("bn_conv01_01_a",
                                                                                           "scale_conv01_01_a"))}
    normalised = (x - per_channel["bn_conv01_01_a.running_mean"]) / np.sqrt(
        per_channel["bn_conv01_01_a.running_var"] + 1e-5)
    expected = np.maximum(normalised * per_channel["scale_conv01_01_a.weight"] + per_channel["scale_conv01_01_a.bias"], 0)
    np.testing.assert_allclose(net.blobs["bn_conv01_01_a"].data, expected, rtol=1e-5, atol=1e-5)
    factor = next(layer for layer in caffe_model(WEIGHTS).layer if layer.name == "bn_conv01_01_a").blobs[2].data[0]
    assert factor not in (0.0, 1.0)  # the division by Caffe's scale factor is exercised


def test_zero_batchnorm_factor_gives_zero_statistics_and_shared_params_must_agree():
    bn = pb.LayerParameter(name="bn", type="BatchNorm")
    arrays = {"bn/0": np.ones(2, np.float32), "bn/1": np.ones(2, np.float32), "bn/2": np.zeros(1, np.float32)}
    state = torch_state_dict(arrays, [bn], "<test>")
    assert not state["bn.running_mean"].any() and not state["bn.running_var"].any()
    convs = [pb.LayerParameter(name=n, type="Convolution", param=[pb.ParamSpec(name="w")]) for n in ("a", "b")]
    with pytest.raises(me.WeightsError, match="layers 'a' and 'b' both give 'w' but with different values"):
        torch_state_dict({"a/0": np.zeros(2, np.float32), "b/0": np.ones(2, np.float32)}, convs, "<test>")


def test_pt_export_loads_into_a_torch_module_that_matches_the_engine(tmp_path):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    assert run(WEIGHTS, tmp_path / "w.pt") == 0
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    definition = read_net_param(DEPLOY)

    class Affine(torch.nn.Module):
        def __init__(self, channels: int, bias: bool):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(channels))
            self.bias = torch.nn.Parameter(torch.empty(channels)) if bias else None

        def forward(self, x):
            y = x * self.weight.view(1, -1, 1, 1)
            return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y

    class TorchMemNet(torch.nn.Module):
        """Runs the Caffe layer list with torch modules named as the export names them."""

        def __init__(self):
            super().__init__()
            for layer in definition.layer:
                if layer.type == "BatchNorm":
                    channels = state[f"{layer.name}.running_mean"].numel()
                    setattr(self, layer.name, torch.nn.BatchNorm2d(channels, eps=1e-5, affine=False))
                elif layer.type == "Scale":
                    setattr(self, layer.name, Affine(state[f"{layer.name}.weight"].numel(), layer.scale_param.bias_term))
                elif layer.type == "Convolution":
                    for spec, suffix in zip(layer.param, ("weight", "bias")):
                        key = spec.name or f"{layer.name}.{suffix}"
                        owner, _, attr = key.rpartition(".")
                        if owner and not hasattr(self, owner):
                            setattr(self, owner, torch.nn.Module())
                        target = getattr(self, owner) if owner else self
                        if not hasattr(target, attr):
                            target.register_parameter(attr, torch.nn.Parameter(torch.empty_like(state[key])))

        def param(self, layer, i):
            key = layer.param[i].name or f"{layer.name}.{('weight', 'bias')[i]}"
            owner, _, attr = key.rpartition(".")
            return getattr(getattr(self, owner) if owner else self, attr)

        def forward(self, data):
            blobs = {"data": data}
            for layer in definition.layer:
                x = [blobs[b] for b in layer.bottom]
                if layer.type in ("BatchNorm", "Scale"):
                    y = getattr(self, layer.name)(x[0])
                elif layer.type == "ReLU":
                    y = functional.relu(x[0])
                elif layer.type == "Convolution":
                    p = layer.convolution_param
                    y = functional.conv2d(x[0], self.param(layer, 0), self.param(layer, 1), padding=p.pad[0])
                elif layer.type == "Eltwise":
                    y = sum(x)
                elif layer.type == "Concat":
                    y = torch.cat(x, dim=1)
                blobs[layer.top[0]] = y
            return blobs["HR_recovery"]

    model = TorchMemNet().eval()
    model.load_state_dict(state, strict=True)  # every exported name is used, every module filled
    image = np.load(GOLDEN)["deploy/input"]
    with torch.no_grad():
        ours = model(torch.from_numpy(image)).numpy()
    engine = me.Net(DEPLOY, phase=me.TEST, weights=WEIGHTS).forward(data=image)["HR_recovery"]
    np.testing.assert_allclose(ours, engine, rtol=0, atol=1e-4 * max(1.0, np.abs(engine).max()))


def test_pt_without_torch_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert run(WEIGHTS, tmp_path / "w.pt") == 1
    assert "writing .pt needs PyTorch" in capsys.readouterr().err


def test_caffe_style_npz_needs_net_for_torch_names(tmp_path, capsys):
    assert run(WEIGHTS, tmp_path / "w.npz") == 0
    assert run(tmp_path / "w.npz", tmp_path / "t.npz", "--torch") == 1
    assert "pass the net's prototxt with --net" in capsys.readouterr().err
    assert run(tmp_path / "w.npz", tmp_path / "t.npz", "--torch", "--net", DEPLOY) == 0
    assert list(load_npz(str(tmp_path / "t.npz"))) == list(exported_state(tmp_path))



def npz_with_member(path, name: str, payload: bytes) -> None:
    """An .npz (a zip) holding one member ``name`` with ``payload`` (compressed, as np.savez_compressed)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, payload)


def npy_header(shape, descr="<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize("member, payload, message", [
    ("a/0.npy", npy_header((10**6, 10**6)) + bytes(1000), r"array 'a/0' of shape \(1000000, 1000000\) needs .*TiB"),
    ("a/0.npy", npy_header((3,), descr=[("x", "<f4")]) + bytes(12), r"has dtype \[\('x', '<f4'\)\]"),
    ("a/0.npy", b"\x93NUMPY\x01\x00\x20\x00{'descr': 5, 'shape': ()}     \n", "corrupt .npy header"),
    ("a/0.npy", b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,)" + b"(" * 40,
     "corrupt .npy header"),
    ("a/0", b"not an array at all", "corrupt .npy header"),
])
def test_malformed_npz_members_are_one_clear_error_before_reading(tmp_path, member, payload, message):
    npz_with_member(tmp_path / "bad.npz", member, payload)
    with pytest.raises(me.WeightsError, match=r"bad.npz: .*" + message):
        load_npz(str(tmp_path / "bad.npz"))


def test_conversion_builds_no_python_lists_of_the_data(tmp_path):
    weights = np.random.default_rng(0).standard_normal(2_000_000).astype(np.float32)  # 8 MB of floats
    np.savez(tmp_path / "big.npz", **{"conv/0": weights, "conv/1": weights.astype(np.float64)})
    tracemalloc.start()
    assert convert_weights.main([str(tmp_path / "big.npz"), str(tmp_path / "big.caffemodel")]) == 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    data = weights.nbytes * 3  # the float32 and the float64 copy
    assert peak < 4 * data, peak  # Python lists of these values alone would take ~32 bytes per value
    model = caffe_model(tmp_path / "big.caffemodel")
    np.testing.assert_array_equal(np.asarray(model.layer[0].blobs[0].data, np.float32), weights)
    np.testing.assert_array_equal(np.asarray(model.layer[0].blobs[1].double_data), weights.astype(np.float64))
