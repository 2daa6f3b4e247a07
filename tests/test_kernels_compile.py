"""Every kernel family compiles with NVRTC, without a GPU, exactly as the loader will compile it.

cuda-bindings' NVRTC runs without a driver, so this runs in CI: a kernel that does not compile
(for a Hopper or an older Turing target, float or double) fails here rather than on a GPU.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from memnet_engine.core.cuda import loader

ARCHES = ("compute_90", "compute_75")
PACKAGE = Path(loader.__file__).resolve().parent
REPO = PACKAGE.parents[2]


@pytest.fixture(scope="module")
def nvrtc():
    return pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (NVRTC) is not installed")


def _check(nvrtc, result, program, what: str):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise AssertionError(f"{what}: {err.name}\n{_log(nvrtc, program)}")
    return result[1:]


def _log(nvrtc, program) -> str:
    _, size = nvrtc.nvrtcGetProgramLogSize(program)
    buffer = b" " * size
    nvrtc.nvrtcGetProgramLog(program, buffer)
    return buffer.decode(errors="replace").rstrip("\x00").strip()


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("family", sorted(loader.KERNELS))
def test_family_compiles_with_every_name_expression(nvrtc, family: str, arch: str) -> None:
    source = loader.kernel_source(family).encode()
    (program,) = _check(nvrtc, nvrtc.nvrtcCreateProgram(source, f"{family}.cu".encode(), 0, [], []), None, "create")
    try:
        names = loader.name_expressions(family)
        for name in names:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(program, name.encode()), program, f"add {name}")
        options = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in loader.COMPILE_OPTIONS]
        _check(nvrtc, nvrtc.nvrtcCompileProgram(program, len(options), options), program,
               f"compile {family}.cu for {arch}")
        log = _log(nvrtc, program)
        assert "warning" not in log.lower(), f"{family}.cu ({arch}) compiled with warnings:\n{log}"
        for name in names:
            (lowered,) = _check(nvrtc, nvrtc.nvrtcGetLoweredName(program, name.encode()), program, f"lowered {name}")
            assert lowered, f"{name} was not instantiated"
        (size,) = _check(nvrtc, nvrtc.nvrtcGetPTXSize(program), program, "PTX size")
        assert size > 100
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def test_every_cu_file_is_a_listed_family() -> None:
    files = {p.stem for p in loader.kernel_dir().glob("*.cu")}
    assert files == set(loader.KERNELS)


@pytest.mark.parametrize("family", sorted(loader.KERNELS))
def test_listed_kernels_are_the_templates_the_file_defines(family: str) -> None:
    text = (loader.kernel_dir() / f"{family}.cu").read_text()
    defined = re.findall(r"template\s*<typename T>\s*__global__\s+void\s+(\w+)\s*\(", text)
    assert sorted(defined) == sorted(loader.KERNELS[family])


def _kernel_uses() -> set[tuple[str, str]]:
    """(family, kernel) of every launch / get_kernel call with literal names in memnet_engine/cuda."""
    uses = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("launch", "launch_blocks", "get_kernel")
                    and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                uses.add((node.args[0].value, node.args[1].value))
    return uses


def test_wrappers_launch_exactly_the_listed_kernels() -> None:
    listed = {(family, name) for family, names in loader.KERNELS.items() for name in names}
    assert _kernel_uses() == listed

def test_kernels_found_in_the_checkout() -> None:
    assert loader.kernel_dir() == REPO / "kernels"


def test_kernels_found_in_an_installed_wheel(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("memnet_engine", "kernels"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # Built the way `pip install .` builds (isolated, with pyproject.toml's build requirements).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from memnet_engine.core.cuda import loader; "
             "print(loader.kernel_dir()); print(len(loader.kernel_source('im2col')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         check=True, capture_output=True, text=True).stdout.split()
    assert Path(out[0]) == site / "memnet_engine" / "kernels"
    assert int(out[1]) > 1000
    assert {p.stem for p in Path(out[0]).glob("*.cu")} == set(loader.KERNELS)
