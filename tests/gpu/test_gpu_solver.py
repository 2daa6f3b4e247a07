"""The SGD solver on a GPU net (fused update kernel) against the real Caffe: losses, weights, momentum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import memnet_engine as me
from golden_cases import golden_params, skip_if_absent

from .gpu_testing import assert_close

TOLERANCE = 1e-4


@pytest.mark.parametrize("folder, case", golden_params(
    "memnet", lambda case: [pytest.mark.slow] if case.get("C", 0) >= 64 else []))  # ~20 s emulated
def test_memnet_training_steps_on_gpu_match_caffe(gpu, folder: Path, case: dict) -> None:
    skip_if_absent(folder)
    name = case["name"]
    solver = me.SGDSolver(str(folder / f"{name}_solver.prototxt"), device="gpu")
    assert isinstance(solver.net.params["conv1"][0].data, gpu.ndarray)
    solver.net.copy_from(str(folder / f"{name}_init.caffemodel"))
    for step, expected in enumerate(case["losses"]):
        solver.step(1)
        for blob, value in expected.items():
            got = float(me.to_numpy(solver.net.blobs[blob].data).reshape(-1)[0])
            assert abs(got - value) <= TOLERANCE * max(1.0, abs(value)), (step, blob, got, value)
    snapshot = me.Net(str(folder / f"{name}_train.prototxt"), phase=me.TRAIN,
                      weights=str(folder / f"{name}_iter_{case['iters']}.caffemodel"))
    for layer_name, params in snapshot.params.items():
        for i, p in enumerate(params):
            assert_close(solver.net.params[layer_name][i].data, p.data, TOLERANCE, f"{layer_name}/{i}")
    state = me.caffe_pb2.SolverState()
    state.ParseFromString((folder / f"{name}_iter_{case['iters']}.solverstate").read_bytes())
    assert len(state.history) == len(solver.history)
    for k, (ours, theirs) in enumerate(zip(solver.history, state.history)):
        assert_close(ours, np.asarray(theirs.data, np.float32), TOLERANCE, f"momentum history {k}")
