"""The console commands: declared in setup.py, resolvable, and with a plain-text --help."""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, setup_argument
from memnet_engine.cli.help_format import plain_text

COMMANDS = ("memnet-train", "memnet-restore", "memnet-evaluate", "memnet-convert", "memnet-make-net",
            "memnet-make-data", "memnet-precise-bn")
REST_MARKUP = re.compile(r"``|`[^`\n]+`|:[a-z]+:`|^\s*=+(\s+=+)*\s*$", re.M)


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' of the console_scripts entry points in setup.py."""
    specs = setup_argument("entry_points")["console_scripts"]
    return dict(re.fullmatch(r"\s*(\S+)\s*=\s*(\S+)\s*", spec).groups() for spec in specs)


def resolve(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def test_every_command_is_a_console_script_with_a_shim():
    scripts = console_scripts()
    assert set(COMMANDS) <= set(scripts)
    for name, target in scripts.items():
        assert callable(resolve(target)), name
        module = target.partition(":")[0].rsplit(".", 1)[1]
        shim = REPO / "tools" / f"{module}.py"
        assert shim.is_file() and f"from {target.partition(':')[0]} import main" in shim.read_text(), shim


@pytest.mark.parametrize("name", COMMANDS)
def test_help_is_plain_text(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name])
    with pytest.raises(SystemExit) as done:
        resolve(console_scripts()[name])(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {name} ") and "\noptions:\n" in text
    assert "\\" not in text, "a backslash (escape or shell continuation) in --help"
    found = REST_MARKUP.search(text)
    assert found is None, f"reST markup in {name} --help: {found.group(0)!r}"


def test_installed_command_runs():
    """The script pip wrote next to this interpreter (skipped for a checkout that was not pip-installed)."""
    script = shutil.which("memnet-make-net", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("memnet-make-net is not installed next to this Python")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: memnet-make-net"), done.stderr


def test_plain_text_strips_rest_markup():
    assert plain_text("see :func:`~a.b`, ``x = 1`` and `y`; *data* only, not 2 * 3 * 4") == \
        "see a.b, x = 1 and y; data only, not 2 * 3 * 4"
    assert plain_text("====  ===\na     b\n====  ===") == "----  ---\na     b\n----  ---"


def test_gen_proto_names_the_missing_grpcio_tools(tmp_path):
    (tmp_path / "grpc_tools").mkdir()  # a package whose import fails, whether or not grpcio-tools is installed
    (tmp_path / "grpc_tools" / "__init__.py").write_text("raise ImportError('no grpc_tools here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    tool = str(REPO / "tools" / "gen_proto.py")
    done = subprocess.run([sys.executable, tool], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "grpcio-tools" in done.stderr and 'pip install -e ".[dev]"' in done.stderr
    helped = subprocess.run([sys.executable, tool, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert helped.returncode == 0 and "caffe_pb2.py" in helped.stdout
    assert any(req.startswith("grpcio-tools") for req in setup_argument("extras_require")["dev"])
