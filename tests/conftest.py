"""Shared test helpers: paths to fixtures and ../shared, and a one-layer builder."""
from __future__ import annotations

import ast
import signal
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import memnet_engine as me

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
GOLDEN_FIXTURES = FIXTURES / "golden"
SHARED = REPO.parent / "shared"
SHARED_GOLDEN = SHARED / "golden"


def shared_golden() -> Path:
    """../shared/golden, or skip the test (a user's clone has no ../shared)."""
    if not (SHARED_GOLDEN / "index.json").is_file():
        pytest.skip("../shared/golden is not present")
    return SHARED_GOLDEN


def build_layer(text: str, bottom_shapes, phase=me.TRAIN, dtype=np.float64, seed: int = 0):
    """Set up one layer from LayerParameter text on random float64 bottoms.

    Returns (layer, bottoms, tops); a top named like its bottom is the same blob (in place).
    """
    param = text_format.Parse(text, me.caffe_pb2.LayerParameter())
    param.phase = phase
    rs = np.random.default_rng(seed)
    bottoms = []
    for shape in bottom_shapes:
        blob = me.Blob(shape, dtype)
        blob.data = rs.standard_normal(shape).astype(dtype)
        bottoms.append(blob)
    tops = []
    for name in param.top:
        same = [b for b, bname in zip(bottoms, param.bottom) if bname == name]
        tops.append(same[0] if same else me.Blob((), dtype))
    layer = me.create_layer(param, dtype=dtype)
    layer.setup(bottoms, tops)
    return layer, bottoms, tops


def traced_memory_of(run, repeats: int = 3) -> tuple[int, int]:
    """(growth, peak above the start) in bytes of Python-traced memory over ``repeats`` calls of ``run()``."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(repeats):
            run()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - before, peak - before


def interrupt_after(command: list, marker: str, stream: str, **popen) -> tuple[int, str, str]:
    """Run ``command``; press Ctrl-C (SIGINT) once a line of ``stream`` ('stdout' or 'stderr') holds
    ``marker``; return (exit code, rest of stdout, rest of stderr)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        for line in getattr(proc, stream):
            if marker in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err


@pytest.fixture
def make_layer():
    return build_layer


def tiny_memnet_training_set(folder: Path, batch_size: int = 4) -> Path:
    """A shuffled M2R1 C4 MemNet train net over two small HDF5 files of random 9x9 patches in ``folder``."""
    import h5py

    from memnet_engine.memnet.models import MemNetConfig, memnet_train_net
    from google.protobuf import text_format as tf

    rs = np.random.default_rng(0)
    for k in range(2):
        label = rs.random((12, 1, 9, 9)).astype(np.float32)
        with h5py.File(folder / f"part{k}.h5", "w") as f:
            f["data"], f["label"] = label + 0.1 * rs.standard_normal(label.shape).astype(np.float32), label
    (folder / "list.txt").write_text("part0.h5\npart1.h5\n")
    net = memnet_train_net(MemNetConfig(2, 1, 4), source="list.txt", batch_size=batch_size, shuffle=True)
    (folder / "net.prototxt").write_text(tf.MessageToString(net))
    return folder / "net.prototxt"


def setup_argument(name: str):
    """The literal value of the keyword argument ``name`` of the setup() call in setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == name))


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), also when pytest was started with SIGINT ignored (a
    background job of a non-interactive shell inherits SIG_IGN, and Python then installs no handler)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
