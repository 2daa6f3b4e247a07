"""MemNet prototxt generator: parity with Caffe's golden MemNet nets, variants, depth, committed files, CLI."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from memnet_engine import TEST, TRAIN, Net
from memnet_engine.memnet.models import MemNetConfig, conv_depth, memnet_deploy_net, memnet_train_net
from memnet_engine.memnet.models.standard import SOLVER_FILE, standard_files
from memnet_engine.core.net_param import filter_net
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.core.prototxt import parse_text, read_net_param, read_solver_param

from conftest import GOLDEN_FIXTURES as FIXTURES, REPO, SHARED_GOLDEN

from memnet_engine.cli import make_memnet

# name, folder, M, R, C, train batch, deploy input shape (as in the golden index.json)
GOLDEN = [
    pytest.param("memnet_m2r2_c8", FIXTURES, 2, 2, 8, 4, (1, 1, 16, 14), id="m2r2_c8"),
    pytest.param("memnet_m6r6_c64", SHARED_GOLDEN, 6, 6, 64, 2, (1, 1, 24, 20), id="m6r6_c64"),
]


def golden_nets(name, folder, m, r, c, batch, shape):
    if not (folder / f"{name}_train.prototxt").exists():
        pytest.skip(f"{folder} not available")
    config = MemNetConfig(m, r, c)
    generated = {
        "train": memnet_train_net(config, source=f"{name}_train_list.txt", batch_size=batch, shuffle=False,
                                  name=name),
        "deploy": memnet_deploy_net(config, input_shape=shape, name=name),
    }
    golden = {kind: read_net_param(str(folder / f"{name}_{kind}.prototxt")) for kind in generated}
    # The golden train nets were written without the release's phase rule on the data layer; Caffe ran them
    # in TRAIN, where that rule keeps the layer, so the nets Caffe built are the same.
    data = generated["train"].layer[0]
    assert [rule.phase for rule in data.include] == [TRAIN] and not golden["train"].layer[0].include
    del data.include[:]
    return generated, golden


@pytest.mark.parametrize("name, folder, m, r, c, batch, shape", GOLDEN)
def test_generated_nets_equal_the_golden_caffe_nets_layer_by_layer(name, folder, m, r, c, batch, shape):
    generated, golden = golden_nets(name, folder, m, r, c, batch, shape)
    for kind in generated:
        ours, theirs = generated[kind], golden[kind]
        assert [lp.name for lp in ours.layer] == [lp.name for lp in theirs.layer], kind
        for mine, ref in zip(ours.layer, theirs.layer):
            assert mine == ref, f"{kind} layer '{ref.name}' differs:\n{mine}\nvs golden\n{ref}"
        assert list(ours.input) == list(theirs.input) and list(ours.input_dim) == list(theirs.input_dim)
        assert ours == theirs


@pytest.mark.parametrize("name, folder, m, r, c, batch, shape", GOLDEN)
def test_generated_nets_build_with_the_golden_blob_and_param_shapes(name, folder, m, r, c, batch, shape,
                                                                     monkeypatch):
    generated, golden = golden_nets(name, folder, m, r, c, batch, shape)
    monkeypatch.chdir(folder)  # the HDF5 list is relative, as Caffe ran it
    for kind, phase in (("train", TRAIN), ("deploy", TEST)):
        ours = Net(generated[kind], phase=phase)
        theirs = Net(str(folder / f"{name}_{kind}.prototxt"), phase=phase)
        assert {n: b.shape for n, b in ours.blobs.items()} == {n: b.shape for n, b in theirs.blobs.items()}
        assert {n: [b.shape for b in bs] for n, bs in ours.params.items()} == \
               {n: [b.shape for b in bs] for n, bs in theirs.params.items()}
        assert [(p.owner, p.name, p.lr_mult) for p in ours.learnable_params] == \
               [(p.owner, p.name, p.lr_mult) for p in theirs.learnable_params]
        assert ours.outputs == theirs.outputs
        assert conv_depth(ours) == conv_depth(theirs) == 1 + m * (2 * r + 1) + 1


def test_caffe_trained_weights_load_by_name_and_reproduce_the_golden_deploy_output():
    golden = np.load(FIXTURES / "memnet_m2r2_c8.npz")
    image = golden["deploy/input"]
    net = Net(memnet_deploy_net(MemNetConfig(2, 2, 8), input_shape=image.shape), phase=TEST,
              weights=str(FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel"))
    out = net.forward(data=image)
    for blob in ("conv_transition_01", "HR_recovery_02", "HR_recovery"):
        ref = golden[f"deploy/{blob}"]
        np.testing.assert_allclose(net.blobs[blob].data, ref, rtol=0, atol=1e-4 * max(1.0, np.abs(ref).max()))
    assert list(out) == ["HR_recovery"]


def test_recursions_share_their_convolutions_and_reconstructions_share_recon():
    net = Net(memnet_deploy_net(MemNetConfig(2, 3, 4), input_shape=(1, 1, 5, 5)), phase=TEST)
    for m in ("01", "02"):
        for side in ("a", "b"):
            first = net.params[f"conv{m}_01_{side}"]
            for r in ("02", "03"):
                assert all(x is y for x, y in zip(first, net.params[f"conv{m}_{r}_{side}"]))
    assert all(x is y for x, y in zip(net.params["conv_end_01"], net.params["conv_end_02"]))
    assert net.params["conv01_01_a"][0] is not net.params["conv02_01_a"][0]
    names = [p.name for p in net.learnable_params]
    assert names.count("conv01_wa") == 1 and names.count("Recon_w") == 1


def concat_bottoms(config: MemNetConfig, m: int) -> list[str]:
    net = memnet_deploy_net(config, input_shape=(1, 1, 6, 6))
    return next(list(lp.bottom) for lp in net.layer if lp.name == f"concat{m:02d}")


def test_gate_inputs_of_the_full_net_and_of_the_nl_ns_ablations():
    full = MemNetConfig(3, 3, 4)
    assert concat_bottoms(full, 3) == ["conv1", "conv_transition_01", "conv_transition_02",
                                       "eltwise03_01", "eltwise03_02", "eltwise03_03"]
    assert concat_bottoms(MemNetConfig(3, 3, 4, long_term=False), 3) == ["eltwise03_01", "eltwise03_02",
                                                                         "eltwise03_03"]
    assert concat_bottoms(MemNetConfig(3, 3, 4, long_term=False), 1) == ["eltwise01_01", "eltwise01_02",
                                                                         "eltwise01_03"]
    assert concat_bottoms(MemNetConfig(3, 3, 4, short_term=False), 3) == ["conv1", "conv_transition_01",
                                                                          "conv_transition_02", "eltwise03_03"]
    both = MemNetConfig(3, 3, 4, long_term=False, short_term=False)
    net = Net(memnet_deploy_net(both, input_shape=(1, 1, 6, 6)), phase=TEST)
    assert concat_bottoms(both, 2) == ["eltwise02_03"] and net.blobs["concat02"].shape == (1, 4, 6, 6)


def test_basic_memnet_reconstructs_only_the_last_block():
    train = memnet_train_net(MemNetConfig(3, 2, 4, multi_supervised=False), source="x.txt", batch_size=2)
    layers = {lp.name: lp for lp in train.layer}
    assert [n for n in layers if n.startswith("conv_end")] == ["conv_end_03"]
    assert list(layers["conv_end_03"].bottom) == ["bn_conv_end_03"]
    assert list(layers["bn_conv_end_03"].bottom) == ["conv_transition_03"]
    assert [p.name for p in layers["conv_end_03"].param] == ["Recon_w", "Recon_b"]
    assert list(layers["HR_recovery"].bottom) == ["data", "conv_end_03"]
    losses = [lp for lp in train.layer if lp.type == "EuclideanLoss"]
    assert [(lp.name, list(lp.bottom)) for lp in losses] == [("loss", ["HR_recovery", "label"])]
    assert not any(n.startswith("weight_output_end") for n in layers)
    deploy = Net(memnet_deploy_net(MemNetConfig(3, 2, 4, multi_supervised=False), input_shape=(1, 1, 7, 5)))
    assert deploy.outputs == ["HR_recovery"] and deploy.blobs["HR_recovery"].shape == (1, 1, 7, 5)


def test_multi_supervised_losses_are_named_as_in_the_release():
    net = memnet_train_net(MemNetConfig(10, 1, 2), source="x.txt", batch_size=1)
    losses = [lp.name for lp in net.layer if lp.type == "EuclideanLoss"]
    assert losses == [f"loss_{m:02d}" for m in range(1, 11)] + ["loss_11"]


def test_conv_depth_counts_the_longest_path_not_all_convolutions():
    text = """
    input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
    layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 1 kernel_size: 1 } }
    layer { name: "r" type: "ReLU" bottom: "a" top: "a" }
    layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 1 kernel_size: 1 } }
    layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 1 kernel_size: 1 } }
    layer { name: "j" type: "Concat" bottom: "c" bottom: "b" top: "j" }
    layer { name: "d" type: "Convolution" bottom: "j" top: "d" convolution_param { num_output: 1 kernel_size: 1 } }
    """
    param = parse_text(text, pb.NetParameter())
    assert conv_depth(param) == 3
    assert conv_depth(Net(param)) == 3  # the built net has a Split on 'x'; it is not counted


@pytest.mark.parametrize("m, r, depth", [(6, 6, 80), (10, 10, 212), (2, 2, 12)])
def test_memnet_depth_is_the_papers(m, r, depth):
    config = MemNetConfig(m, r, 8)
    assert config.depth == depth
    net = Net(memnet_deploy_net(config, input_shape=(1, 1, 8, 8)), phase=TEST)
    assert conv_depth(net) == depth
    for variant in (MemNetConfig(m, r, 8, multi_supervised=False), MemNetConfig(m, r, 8, long_term=False),
                    MemNetConfig(m, r, 8, short_term=False)):
        assert conv_depth(memnet_deploy_net(variant)) == depth


def test_committed_model_files_are_what_the_generator_writes():
    folder = REPO / "prototxt"
    expected = standard_files()
    assert sorted(p.name for p in folder.glob("*.prototxt")) == sorted(expected)
    for name, text in expected.items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"prototxt/{name} is stale: run " \
            "python tools/make_memnet.py --standard prototxt"


@pytest.mark.parametrize("stem, batch", [("memnet_m6r6", 32), ("memnet_m6r6_basic", 32), ("memnet_m6r6_nl", 32),
                                         ("memnet_m6r6_ns", 32), ("memnet_m10r10", 24)])
def test_committed_train_nets_have_the_release_data_layer(stem, batch):
    data = read_net_param(str(REPO / "prototxt" / f"{stem}.prototxt")).layer[0]
    assert (data.type, list(data.top), data.hdf5_data_param.source, data.hdf5_data_param.batch_size) == \
           ("HDF5Data", ["data", "label"], "data/train_list.txt", batch)
    assert [rule.phase for rule in data.include] == [TRAIN] and not data.exclude
    assert data.hdf5_data_param.shuffle
    net = read_net_param(str(REPO / "prototxt" / f"{stem}.prototxt"))
    filter_net(net, pb.NetState(phase=TEST))
    assert net.layer[0].name == "bn_conv1"


def test_committed_nets_build_and_keep_the_release_names():
    folder = REPO / "prototxt"
    m6r6 = read_net_param(str(folder / "memnet_m6r6.prototxt"))
    assert m6r6.name == "MemNet_M6R6_80C64" and m6r6.layer[-1].name == "loss_7"
    for stem, depth in (("memnet_m6r6", 80), ("memnet_m10r10", 212), ("memnet_m6r6_basic", 80)):
        net = Net(str(folder / f"{stem}_deploy.prototxt"), phase=TEST)
        assert net.inputs == ["data"] and net.blobs["data"].shape == (1, 1, 144, 144)
        assert net.outputs == ["HR_recovery"] and net.blobs["HR_recovery"].shape == (1, 1, 144, 144)
        assert conv_depth(net) == depth


def test_committed_solver_has_the_release_settings_and_points_at_the_train_net():
    solver = read_solver_param(str(REPO / "prototxt" / SOLVER_FILE))
    assert (solver.base_lr, solver.momentum, solver.lr_policy, solver.stepsize, solver.max_iter) == \
           (pytest.approx(0.1), pytest.approx(0.9), "step", 200000, 20000000)
    assert solver.weight_decay == pytest.approx(1e-4) and solver.gamma == pytest.approx(0.1)
    assert solver.clip_gradients == pytest.approx(0.01) and not solver.HasField("adjustable_clip")
    assert solver.solver_mode == pb.SolverParameter.GPU and solver.snapshot_prefix.endswith("/MemNet_M6R6_80C64")
    assert (REPO / "prototxt" / solver.net).is_file()


@pytest.mark.parametrize("argv, batch", [([], 32), (["-M", "10", "-R", "10"], 24), (["-M", "2", "-R", "2"], 64),
                                         (["--nl"], 32), (["--batch-size", "64"], 64)])
def test_cli_default_batch_is_the_releases(tmp_path, argv, batch):
    out = tmp_path / "n.prototxt"
    assert make_memnet.main(argv + ["-o", str(out)]) == 0
    assert read_net_param(str(out)).layer[0].hdf5_data_param.batch_size == batch


def test_cli_writes_the_requested_net(tmp_path, capsys):
    out = tmp_path / "n.prototxt"
    assert make_memnet.main(["-M", "3", "-R", "2", "-C", "16", "--ns", "--deploy", "--input-shape", "1", "1",
                             "9", "7", "-o", str(out)]) == 0
    assert read_net_param(str(out)) == memnet_deploy_net(MemNetConfig(3, 2, 16, short_term=False),
                                                         input_shape=(1, 1, 9, 7))
    assert "depth 17" in capsys.readouterr().err
    assert make_memnet.main(["-M", "2", "-R", "2", "--basic", "--batch-size", "8", "--source", "l.txt",
                             "--no-shuffle", "-o", str(out)]) == 0
    assert read_net_param(str(out)) == memnet_train_net(MemNetConfig(2, 2, 64, multi_supervised=False),
                                                        source="l.txt", batch_size=8, shuffle=False)


@pytest.mark.parametrize("argv", [["--deploy", "--batch-size", "4"], ["--input-shape", "1", "1", "8", "8"],
                                  ["-M", "0"], ["--standard", "x", "-o", "y"], ["--from-train", "t.prototxt"]])
def test_cli_rejects_contradictory_or_invalid_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_memnet.main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_check_reports_a_drifted_folder(tmp_path, capsys):
    assert make_memnet.main(["--standard", str(tmp_path)]) == 0
    assert make_memnet.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "memnet_m6r6.prototxt").write_text("name: 'edited'\n")
    assert make_memnet.main(["--check", str(tmp_path)]) == 1
    assert "memnet_m6r6.prototxt" in capsys.readouterr().err


def test_cli_help_runs_as_a_script():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(REPO / "tools" / "make_memnet.py"), "--help"], env=env,
                            capture_output=True, text=True, check=True)
    for option in ("--blocks", "--recursions", "--channels", "--basic", "--nl", "--ns", "--deploy", "--standard"):
        assert option in result.stdout


def test_cli_deploy_from_train_restores_as_the_released_deploy_net(tmp_path, capsys):
    out = tmp_path / "deploy.prototxt"
    assert make_memnet.main(["--deploy", "--from-train", str(FIXTURES / "memnet_m2r2_c8_train.prototxt"),
                             "--input-shape", "1", "1", "16", "14", "-o", str(out)]) == 0
    weights = str(FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel")
    made = Net(str(out), TEST, weights=weights)
    released = Net(str(FIXTURES / "memnet_m2r2_c8_deploy.prototxt"), TEST, weights=weights)
    image = np.random.default_rng(0).random((1, 1, 16, 14)).astype(np.float32)
    assert made.inputs == ["data"] and made.blobs["data"].shape == (1, 1, 16, 14)
    np.testing.assert_array_equal(made.forward(data=image)[made.outputs[0]],
                                  released.forward(data=image)[released.outputs[0]])
    assert make_memnet.main(["--deploy", "--from-train", str(out)]) == 1
    assert "no data layer" in capsys.readouterr().err
