"""The README's commands and Python snippets run as written, from a checkout (long ones skipped, by name).

Each command runs in a fresh folder that looks like a clone (the checkout's folders linked in) with
../shared next to it when this machine has one; files the README names as the user's own
(USER_FILES) are put there first.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import GOLDEN_FIXTURES, REPO, SHARED
from memnet_engine.cli.model_loading import gpu_available
from memnet_engine.memnet.imageops import write_image

README = REPO / "README.md"
CHECKOUT = ("memnet_engine", "tools", "prototxt", "kernels", "tests", "benchmarks")

# What is not run, and why. Every entry must still match a README command.
SKIPPED = {
    r"^pip install": "installs packages and runs the test suite (this test runs in the installed checkout)",
    r"tools/train\.py|^memnet-train": "trains a net: minutes to days (tests/test_train_cli.py runs short trainings)",
    r"make_training_data\.py .*T91": "builds the paper's 291-image training set (about 13 GB)",
    r"--weights runs/": "needs the weights a training command above writes",
    r"Recon_w": "edits the train net that a command above writes (memnet-make-net)",
    r"--model DEPLOY --weights W": "DEPLOY and W stand for the user's deploy net and weights",
    r"benchmarks/bench_memnet\.py": "a benchmark: minutes (tests/test_bench_memnet.py covers its code)",
    r"benchmarks/gpu_suite\.sh|benchmarks/gpu_data\.sh": "the GPU suite needs a GPU machine (tests/test_gpu_suite.py "
                                                       "runs its --emulate mode)",
    r"model\.onnx --net prototxt/memnet_m6r6": "the clone's model.caffemodel is the golden M2R2 net, not an M6R6 "
                                              "(tests/test_onnx_export.py exports M6R6 with Caffe's weights)",
}
NEEDS = {  # runs only where the machine has it
    r"\.\./shared": (lambda: (SHARED / "datasets").is_dir(), "../shared (the datasets and golden data) is not here"),
    r"import cupy": (gpu_available, "needs CuPy and a CUDA GPU"),
    r"\.pt\b": (lambda: importlib.util.find_spec("torch") is not None, "writing a .pt needs torch"),
}


def user_files(folder) -> None:
    """The files the README's commands name as the user's: a photo and a .caffemodel."""
    rng = np.random.default_rng(0)
    write_image(str(folder / "photo.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    shutil.copy(GOLDEN_FIXTURES / "memnet_m2r2_c8_iter_4.caffemodel", folder / "model.caffemodel")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block."""
    return re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def bash_commands() -> list[str]:
    """One command per line of the bash blocks, continuation lines joined, comment lines dropped."""
    commands = []
    for language, text in readme_blocks():
        if language == "bash":
            lines = re.sub(r"\\\n\s*", "", text).splitlines()
            commands += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return commands


def python_snippets() -> list[str]:
    return [text for language, text in readme_blocks() if language == "python"]


@pytest.fixture
def clone(tmp_path, tmp_path_factory):
    """A folder that looks like a fresh clone, and the environment to run commands in it."""
    folder = tmp_path / "clone"
    folder.mkdir()
    for name in CHECKOUT:
        (folder / name).symlink_to(REPO / name)
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    user_files(folder)
    cache = tmp_path_factory.getbasetemp() / "memnet-cache"  # the built-in training set, built once
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])  # memnet-* commands
    env = dict(os.environ, PYTHONPATH=str(REPO), MEMNET_CACHE=str(cache), PATH=path)
    return folder, env


def skip_reason(command: str) -> "str | None":
    for pattern, reason in SKIPPED.items():
        if re.search(pattern, command):
            return reason
    for pattern, (available, reason) in NEEDS.items():
        if re.search(pattern, command) and not available():
            return reason
    return None


def test_skip_list_matches_the_readme():
    commands = bash_commands()
    for pattern in SKIPPED:
        assert any(re.search(pattern, command) for command in commands), f"no README command matches {pattern}"
    assert sum(skip_reason(command) is None for command in commands) >= 5
    assert python_snippets()


@pytest.mark.parametrize("command", bash_commands())
def test_readme_command_runs(command, clone):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    folder, env = clone
    line = re.sub(r"^python3?\b", sys.executable.replace("\\", "/"), command)
    done = subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    for written in re.findall(r"(?:-o|--output) (\S+)", command):
        assert (folder / written).is_file(), f"{command} did not write {written}"


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_readme_python_snippet_runs(index, clone):
    folder, env = clone
    script = folder / f"snippet_{index}.py"
    script.write_text(python_snippets()[index], encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
