"""Compile a CUDA kernel source with g++ against emu.h into a shared library, one launcher per kernel.

Each name expression ("im2col<float>") gets ``emu_launch_<k>`` (grid, block, argument pointers,
fibers flag) and ``emu_signature_<k>`` (the C types of its parameters).  Kernels that can reach
``__syncthreads`` (directly or through a __device__ helper) are run with fibers.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CXX = os.environ.get("CXX", "g++")
# nvcc option -> g++ option with the same meaning for the emulated kernels
OPTION_MAP = {"--fmad=false": "-ffp-contract=off"}


def compiler_available() -> bool:
    return shutil.which(CXX) is not None


def _functions(source: str) -> dict[str, str]:
    """name -> body of every __device__ / __global__ function in ``source``."""
    bodies = {}
    for match in re.finditer(r"__(?:device|global)__[^;{(]*?\b(\w+)\s*\(", source):
        start = source.index("{", match.end())
        depth, i = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(source[i], 0)
            if depth == 0:
                break
            i += 1
        bodies[match.group(1)] = source[start:i + 1]
    return bodies


def barrier_kernels(source: str) -> set[str]:
    """Names of the functions that can reach __syncthreads."""
    bodies = _functions(source)
    syncing = {name for name, body in bodies.items() if "__syncthreads" in body}
    grew = True
    while grew:
        grew = False
        for name, body in bodies.items():
            if name not in syncing and any(re.search(rf"\b{s}\s*\(", body) for s in syncing):
                syncing.add(name)
                grew = True
    return syncing


@dataclass
class EmulatedKernel:
    name: str
    launch: ctypes._CFuncPtr
    signature: list[str]
    fibers: bool


def _cache_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / f"memnet-cuda-emulator-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return folder


def compile_module(source: str, name_expressions: list[str], options: tuple[str, ...]) -> dict[str, EmulatedKernel]:
    """Build (or reuse) the library for ``source`` and return its kernels by name expression."""
    flags = []
    for option in options:
        if option not in OPTION_MAP:
            raise ValueError(f"emulator: NVRTC option {option!r} has no g++ equivalent here")
        flags.append(OPTION_MAP[option])
    exports = []
    for k, expr in enumerate(name_expressions):
        exports.append(
            f'extern "C" const char* emu_launch_{k}(const unsigned* g, const unsigned* b, void** a, int f) '
            f"{{ return emu_launch(&{expr}, g, b, a, f); }}\n"
            f'extern "C" const char* emu_signature_{k}() '
            f"{{ static const std::string s = emu_signature(&{expr}); return s.c_str(); }}\n")
    text = '#include "emu.h"\n' + source + "\n" + "".join(exports)
    header = (HERE / "emu.h").read_text()
    key = hashlib.sha256((header + text + " ".join(flags) + CXX).encode()).hexdigest()[:24]
    library = _cache_dir() / f"kernels-{key}.so"
    if not library.exists():
        with tempfile.TemporaryDirectory() as tmp:
            cpp = Path(tmp) / "kernels.cpp"
            cpp.write_text(text)
            built = Path(tmp) / "kernels.so"
            command = [CXX, "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Wno-unused-function",
                       f"-I{HERE}", *flags, str(cpp), "-o", str(built)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"emulator: g++ failed:\n{result.stderr[-4000:]}")
            os.replace(built, library)  # atomic: concurrent builds of the same key agree
    lib = ctypes.CDLL(str(library))
    syncing = barrier_kernels(source)
    kernels = {}
    for k, expr in enumerate(name_expressions):
        launch = getattr(lib, f"emu_launch_{k}")
        launch.restype = ctypes.c_char_p
        launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        signature_fn = getattr(lib, f"emu_signature_{k}")
        signature_fn.restype = ctypes.c_char_p
        name = expr.split("<", 1)[0]
        kernels[expr] = EmulatedKernel(expr, launch, signature_fn().decode().split(), name in syncing)
    return kernels
