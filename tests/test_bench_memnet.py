"""benchmarks/bench_memnet.py: its nets are the release's MemNet, its PyTorch twin has the same
parameters, and bad input is one clear error."""
from __future__ import annotations

import importlib.util

import pytest

import memnet_engine as me
from conftest import REPO
from memnet_engine.core.prototxt import read_net_param


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_memnet", REPO / "benchmarks" / "bench_memnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_nets_are_the_committed_m6r6_with_in_memory_data(bench) -> None:
    train, deploy = bench.benchmark_nets(6, 6, 64, batch=8, patch=31, size=288)
    committed = read_net_param(str(REPO / "prototxt" / "memnet_m6r6.prototxt"))
    assert train.layer[0].type == "Input" and list(train.layer[0].top) == ["data", "label"]
    assert list(train.layer[0].input_param.shape[0].dim) == [8, 1, 31, 31]
    assert list(train.layer)[1:] == list(committed.layer)[1:]
    assert list(deploy.input_dim) == [1, 1, 288, 288]


def test_pytorch_twin_has_the_engines_learnable_values(bench) -> None:
    pytest.importorskip("torch")
    blocks, recursions, channels = 2, 3, 8
    train, _ = bench.benchmark_nets(blocks, recursions, channels, batch=2, patch=9, size=9)
    net = me.Net(train, phase=me.TRAIN)
    learned = sum(p.blob.count for p in net.learnable_params if p.lr_mult)  # BatchNorm statistics are buffers
    model = bench.torch_memnet(blocks, recursions, channels)
    assert sum(p.numel() for p in model.parameters()) == learned


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--iters", "-1"], ["--warmup", "-2"]])
def test_bad_arguments_exit_with_usage(bench, argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_unreadable_prototxt_is_one_clear_error(bench, capsys) -> None:
    assert bench.main(["--device", "cpu", "--no-torch", "--train-prototxt", "/nonexistent.prototxt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench_memnet: ") and "nonexistent.prototxt" in err and "Traceback" not in err
