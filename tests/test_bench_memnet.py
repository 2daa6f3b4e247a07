"""The benchmark's generated MemNet is the original release's topology, layer for layer."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from memnet_engine.prototxt import read_net_param

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "golden"
SHARED = (REPO / ".." / "shared" / "golden").resolve()


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_memnet", REPO / "benchmarks" / "bench_memnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder, blocks, recursions, channels", [
    (FIXTURES, 2, 2, 8), (SHARED, 6, 6, 64)], ids=["m2r2_c8", "m6r6_c64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "deploy"])
def test_generated_net_matches_golden_prototxt(bench, folder: Path, blocks, recursions, channels, train) -> None:
    name = f"memnet_m{blocks}r{recursions}_c{channels}"
    path = folder / f"{name}_{'train' if train else 'deploy'}.prototxt"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    golden = read_net_param(str(path))
    ours = bench.memnet_net_param(blocks, recursions, channels, train=train, batch=4, height=12, width=12)
    assert ours.name == golden.name
    assert ours.layer[0].type == "Input" and list(ours.layer[0].top) == (["data", "label"] if train else ["data"])
    golden_layers = list(golden.layer)[1:] if train else list(golden.layer)  # HDF5Data / legacy input
    assert len(ours.layer) - 1 == len(golden_layers)
    for mine, theirs in zip(list(ours.layer)[1:], golden_layers):
        assert mine == theirs, f"layer {theirs.name} differs:\n{mine}\nvs\n{theirs}"


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
