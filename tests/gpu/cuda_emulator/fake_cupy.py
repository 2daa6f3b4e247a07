"""A NumPy-backed stand-in for the part of CuPy that memnet-engine uses, for tests without a GPU.

RawModule compiles the real kernel sources with g++ (build.py) and runs them on the CPU, checking
what a GPU would not: every argument's C type against the kernel's parameter (a Python int or a
float32 passed for ``double`` is an error), C-contiguity of array arguments, launch limits, guard
bytes around every allocation (an out-of-bounds write fails the launch).  ``empty`` fills new
arrays with NaN (ints: a sentinel) so unwritten outputs show.  Device arrays refuse to mix with
NumPy arrays in arithmetic and in assignment (``device[...] = host``), as CuPy's do.

``memory`` counts the bytes of live device arrays (and their peak), as CuPy's pool would be asked
for them (without its rounding, caching or cuBLAS workspaces); active ``cuda.memory_hook.MemoryHook``s
are told of every allocation and free, as CuPy tells them.

``events`` counts what a GPU would be asked to do: kernel launches (``kernel``: RawKernel calls,
by name in ``kernel_names``; ``blas``: cuBLAS gemm and dot; ``elementwise`` and ``reduction``:
CuPy's own kernels behind ufuncs, array methods and module functions; ``memset``: ``fill(0)`` and
``zeros``; ``copy``: device-to-device copies) and transfers (``d2h``: ``get()``, ``asnumpy``,
``float()``/``int()``/``bool()``/``item()``/``tolist()`` of a device array; ``h2d``: host data
to the device).  An operation counts once, however NumPy implements it underneath.

Not emulated: timing, concurrency between threads (they run one after another), the memory model.
"""
from __future__ import annotations

import ctypes
import sys
import types
import weakref
from collections import Counter
from contextlib import contextmanager

import numpy as np

from . import build

GUARD = 64  # bytes of guard before and after every allocation
GUARD_BYTE = 0xA7
_guarded: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
memory = {"live": 0, "peak": 0}  # bytes of device arrays alive now / at most since reset_peak()
LAUNCH_KINDS = ("kernel", "blas", "elementwise", "reduction", "memset", "copy")
TRANSFER_KINDS = ("d2h", "h2d")
events: Counter = Counter()  # LAUNCH_KINDS and TRANSFER_KINDS since reset_events()
kernel_names: Counter = Counter()  # RawKernel launches by name expression
_depth = [0]  # > 0 inside a counted operation: what it does underneath is not counted again
_hooks: list = []  # active MemoryHooks


def reset_peak() -> None:
    memory["peak"] = memory["live"]


def reset_events() -> None:
    events.clear()
    kernel_names.clear()


def launches() -> int:
    """Kernel launches of every kind counted since reset_events()."""
    return sum(events[kind] for kind in LAUNCH_KINDS)


@contextmanager
def _counted(kind: str):
    """Count one ``kind`` event for what runs inside, unless an enclosing operation already counts."""
    if not _depth[0]:
        events[kind] += 1
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1


def _freed(nbytes: int, pointer: int) -> None:
    memory["live"] -= nbytes
    for hook in _hooks:
        hook.free_postprocess(device_id=0, mem_size=nbytes, mem_ptr=pointer, pmem_id=0)
SCALAR_TYPES = {"f": np.float32, "d": np.float64, "i": np.int32}
POINTEE_DTYPES = {"Pf": np.float32, "Pd": np.float64, "Pi": np.int32}


def _to_host(array: np.ndarray) -> np.ndarray:
    events["d2h"] += 1
    return np.array(array.view(np.ndarray), copy=True)


class ndarray(np.ndarray):
    """A 'device' array: NumPy underneath; refuses NumPy arrays as operands, like CuPy."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        for x in inputs + (out or ()):
            if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
                raise TypeError(f"Unsupported type {type(x)}: a NumPy array mixed with a device array")
        plain = [x.view(np.ndarray) if isinstance(x, ndarray) else x for x in inputs]
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
        with _counted("elementwise" if method == "__call__" else "reduction"):
            result = getattr(ufunc, method)(*plain, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __setitem__(self, index, value) -> None:
        # CuPy sends a non-CuPy value to fill(), which refuses arrays that are not 0-d
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        device = isinstance(value, ndarray)
        with _counted("copy" if device else "elementwise"):
            super().__setitem__(index, value.view(np.ndarray) if device else value)

    # CuPy runs one kernel for each of these (cuBLAS for dot); NumPy may run several ufuncs.
    def sum(self, *args, **kwargs):
        with _counted("reduction"):
            return _device(super().sum(*args, **kwargs))

    def mean(self, *args, **kwargs):
        with _counted("reduction"):
            return _device(super().mean(*args, **kwargs))

    def dot(self, *args, **kwargs):
        with _counted("blas"):
            return _device(super().dot(*args, **kwargs))

    def astype(self, dtype, *args, copy=True, **kwargs):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        with _counted("elementwise"):
            return super().astype(dtype, *args, **kwargs)

    def copy(self, *args, **kwargs):
        with _counted("copy"):
            return super().copy(*args, **kwargs)

    def fill(self, value) -> None:
        with _counted("memset" if value == 0 else "elementwise"):
            super().fill(value)

    # ------------------------------------------------------------ device -> host
    def get(self) -> np.ndarray:
        return _to_host(self)

    def item(self, *args):
        return _to_host(self).item(*args)

    def tolist(self):
        return _to_host(self).tolist()

    def __float__(self) -> float:
        return float(_to_host(self))

    def __int__(self) -> int:
        return int(_to_host(self))

    def __bool__(self) -> bool:
        return bool(_to_host(self))


def _device(value):
    """NumPy results as device arrays; a NumPy scalar becomes a 0-d device array, as CuPy returns."""
    if isinstance(value, tuple):
        return tuple(_device(v) for v in value)
    if isinstance(value, np.generic):
        scalar = _allocate((), value.dtype)
        scalar.view(np.ndarray)[()] = value
        return scalar
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    return value


def _allocate(shape, dtype) -> ndarray:
    """Uninitialised device array with guard bytes around it; floats are NaN, ints a sentinel."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.full(nbytes + 2 * GUARD, GUARD_BYTE, np.uint8)
    array = raw[GUARD:GUARD + nbytes].view(dtype).reshape(shape).view(ndarray)
    if dtype.kind == "f":
        array.view(np.ndarray).fill(np.nan)
    elif dtype.kind in "iu":
        array.view(np.ndarray).fill(-123456789 if dtype.kind == "i" else 123456789)
    _guarded[id(raw)] = raw
    memory["live"] += nbytes
    memory["peak"] = max(memory["peak"], memory["live"])
    pointer = raw.ctypes.data
    for hook in _hooks:
        hook.malloc_postprocess(device_id=0, size=nbytes, mem_size=nbytes, mem_ptr=pointer, pmem_id=0)
    weakref.finalize(raw, _freed, nbytes, pointer)
    return array


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _check_guards(array: np.ndarray, kernel: str) -> None:
    raw = _root(array)
    if _guarded.get(id(raw)) is raw and raw.dtype == np.uint8:
        if (raw[:GUARD] != GUARD_BYTE).any() or (raw[-GUARD:] != GUARD_BYTE).any():
            raise RuntimeError(f"emulator: {kernel} wrote outside an array it was given")


# ---------------------------------------------------------------- array creation (CuPy semantics)
def empty(shape, dtype=np.float64, order="C"):
    return _allocate(shape, dtype)


def zeros(shape, dtype=np.float64, order="C"):
    array = _allocate(shape, dtype)
    array.fill(0)
    return array


def ones(shape, dtype=np.float64):
    array = _allocate(shape, dtype)
    array.fill(1)
    return array


def full(shape, fill_value, dtype=None):
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    array = _allocate(shape, dtype)
    array.fill(fill_value)
    return array


def array(obj, dtype=None, copy=True, order="K"):
    with _counted("copy" if isinstance(obj, ndarray) else "h2d"):
        host = np.array(obj.view(np.ndarray) if isinstance(obj, ndarray) else obj, dtype=dtype)
    out = _allocate(host.shape, host.dtype)
    out.view(np.ndarray)[...] = host
    return out


def asnumpy(a) -> np.ndarray:
    return _to_host(a) if isinstance(a, ndarray) else np.asarray(a)


def asarray(obj, dtype=None, order=None):
    if isinstance(obj, ndarray) and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    return array(obj, dtype)  # host data is copied to the device, as cupy.asarray does


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return array(a, dtype)


def zeros_like(a, dtype=None):
    return zeros(a.shape, dtype or a.dtype)


def empty_like(a, dtype=None):
    return empty(a.shape, dtype or a.dtype)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def __getattr__(name: str):
    """Any other NumPy function, refusing host arrays and returning device arrays."""
    value = getattr(np, name)
    if not callable(value) or isinstance(value, type) or isinstance(value, np.ufunc):
        return value

    def device_function(*args, **kwargs):
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"cupy.{name}: a NumPy array given where a device array is needed")
        with _counted("blas" if name in ("dot", "vdot", "matmul", "tensordot") else "elementwise"):
            return _device(value(*args, **kwargs))

    return device_function


# ---------------------------------------------------------------- kernels
class RawKernel:
    def __init__(self, kernel: build.EmulatedKernel):
        self.kernel = kernel

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None) -> None:
        grid, block = _dim3(grid), _dim3(block)
        name, signature = self.kernel.name, self.kernel.signature
        if block[0] * block[1] * block[2] > 1024 or min(grid + block) < 1 or max(grid[1:]) > 65535:
            raise ValueError(f"emulator: {name}: invalid launch grid {grid} block {block}")
        if len(args) != len(signature):
            raise TypeError(f"emulator: {name} takes {len(signature)} arguments, got {len(args)}")
        holders, arrays = [], []
        for k, (code, arg) in enumerate(zip(signature, args)):
            holders.append(_argument(name, k, code, arg))
            if isinstance(arg, ndarray):
                arrays.append(arg)
        pointers = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        events["kernel"] += 1
        kernel_names[name] += 1
        error = self.kernel.launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), pointers,
                                   int(self.kernel.fibers))
        if error:
            raise RuntimeError(f"emulator: {name}: {error.decode()}")
        for a in arrays:
            _check_guards(a, name)


def _dim3(value) -> tuple[int, int, int]:
    value = tuple(int(v) for v in (value if isinstance(value, tuple) else (value,)))
    return value + (1,) * (3 - len(value))


def _argument(kernel: str, k: int, code: str, arg):
    if code.startswith("P"):
        if isinstance(arg, ndarray):
            if arg.dtype != POINTEE_DTYPES[code]:
                raise TypeError(f"emulator: {kernel} argument {k}: {arg.dtype} array for a {code} parameter")
            if not arg.flags.c_contiguous:
                raise ValueError(f"emulator: {kernel} argument {k}: array is not C-contiguous")
            return ctypes.c_void_p(arg.ctypes.data)
        if type(arg) is np.uintp and arg == 0:
            return ctypes.c_void_p(0)
        raise TypeError(f"emulator: {kernel} argument {k}: {type(arg).__name__} for a pointer parameter")
    expected = SCALAR_TYPES[code]
    if type(arg) is not expected:
        raise TypeError(f"emulator: {kernel} argument {k}: {type(arg).__name__} for a {expected.__name__} parameter")
    return np.ctypeslib.as_ctypes(np.array(arg, expected))


class RawModule:
    def __init__(self, code: str, options=(), name_expressions=(), **_):
        self._kernels = build.compile_module(code, list(name_expressions), tuple(options))

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self._kernels[name])


# ---------------------------------------------------------------- cupy.cublas / cupy.cuda
def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
    events["blas"] += 1
    op_a = a.view(np.ndarray).T if transa == "T" else a.view(np.ndarray)
    op_b = b.view(np.ndarray).T if transb == "T" else b.view(np.ndarray)
    assert op_a.shape[1] == op_b.shape[0]
    product = alpha * (op_a @ op_b)
    if out is None:
        out = _allocate(product.shape, a.dtype)
        out.view(np.ndarray)[...] = product
        return out
    assert out.shape == product.shape and out.dtype == a.dtype
    target = out.view(np.ndarray)
    target[...] = product if beta == 0 else product + beta * target
    return out


cublas = types.ModuleType("cupy.cublas")
cublas.gemm = _gemm


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"emulator: there is one emulated device, no device {self.id}")

    def use(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass


class MemoryHook:
    """cupy.cuda.memory_hook.MemoryHook: while entered, told of every allocation and free."""

    name = "MemoryHook"

    def __enter__(self):
        _hooks.append(self)
        return self

    def __exit__(self, *_):
        _hooks.remove(self)

    def malloc_postprocess(self, **kwargs):
        pass

    def free_postprocess(self, **kwargs):
        pass


def get_default_memory_pool():
    return types.SimpleNamespace(used_bytes=lambda: memory["live"])


cuda = types.ModuleType("cupy.cuda")
cuda.Device = Device
cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                     getDeviceProperties=lambda device: {"name": b"CPU kernel emulator"})
cuda.get_current_stream = lambda: types.SimpleNamespace(synchronize=lambda: None)
memory_hook = types.ModuleType("cupy.cuda.memory_hook")
memory_hook.MemoryHook = MemoryHook
cuda.memory_hook = memory_hook


def install() -> dict:
    """Make ``import cupy`` give this module; returns what sys.modules held before (for restore)."""
    names = {"cupy": sys.modules[__name__], "cupy.cuda": cuda, "cupy.cublas": cublas,
             "cupy.cuda.memory_hook": memory_hook}
    previous = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    return previous


def uninstall(previous: dict) -> None:
    for name, module in previous.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
