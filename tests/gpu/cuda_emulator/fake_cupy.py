"""A NumPy-backed stand-in for the part of CuPy that memnet-engine uses, for tests without a GPU.

RawModule compiles the real kernel sources with g++ (build.py) and runs them on the CPU, checking
what a GPU would not: every argument's C type against the kernel's parameter (a Python int or a
float32 passed for ``double`` is an error), C-contiguity of array arguments, launch limits, guard
bytes around every allocation (an out-of-bounds write fails the launch).  ``empty`` fills new
arrays with NaN (ints: a sentinel) so unwritten outputs show.  Device arrays refuse to mix with
NumPy arrays in arithmetic and in assignment (``device[...] = host``), as CuPy's do.

``memory`` counts the bytes of live device arrays (and their peak), as CuPy's pool would be asked
for them (without its rounding, caching or cuBLAS workspaces).

Not emulated: timing, concurrency between threads (they run one after another), the memory model.
"""
from __future__ import annotations

import ctypes
import sys
import types
import weakref

import numpy as np

from . import build

GUARD = 64  # bytes of guard before and after every allocation
GUARD_BYTE = 0xA7
_guarded: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
memory = {"live": 0, "peak": 0}  # bytes of device arrays alive now / at most since reset_peak()
_memory_hooks: list = []  # entered cupy.cuda.memory_hook.MemoryHook instances, told of every malloc and free


def reset_peak() -> None:
    memory["peak"] = memory["live"]


def _freed(nbytes: int) -> None:
    memory["live"] -= nbytes
    for hook in list(_memory_hooks):
        hook.free_postprocess(device_id=0, mem_size=nbytes, mem_ptr=0, pmem_id=0)
SCALAR_TYPES = {"f": np.float32, "d": np.float64, "i": np.int32}
POINTEE_DTYPES = {"Pf": np.float32, "Pd": np.float64, "Pi": np.int32}


class ndarray(np.ndarray):
    """A 'device' array: NumPy underneath; refuses NumPy arrays as operands, like CuPy."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        for x in inputs + (out or ()):
            if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
                raise TypeError(f"Unsupported type {type(x)}: a NumPy array mixed with a device array")
        plain = [x.view(np.ndarray) if isinstance(x, ndarray) else x for x in inputs]
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __setitem__(self, index, value) -> None:
        # CuPy sends a non-CuPy value to fill(), which refuses arrays that are not 0-d
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        super().__setitem__(index, value)

    def get(self) -> np.ndarray:
        return np.array(self.view(np.ndarray), copy=True)

    @property
    def data(self) -> "MemoryPointer":
        """The device address of the first element (CuPy's ``ndarray.data``), for cuBLAS calls."""
        return MemoryPointer(self.ctypes.data)


def _device(value):
    if isinstance(value, tuple):
        return tuple(_device(v) for v in value)
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
    weakref.finalize(raw, _freed, nbytes)
    for hook in list(_memory_hooks):
        hook.malloc_postprocess(device_id=0, size=nbytes, mem_size=nbytes, mem_ptr=raw.ctypes.data, pmem_id=0)
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
    array.view(np.ndarray).fill(0)
    return array


def ones(shape, dtype=np.float64):
    array = _allocate(shape, dtype)
    array.view(np.ndarray).fill(1)
    return array


def full(shape, fill_value, dtype=None):
    host = np.full(shape, fill_value, dtype)
    return array(host)


def array(obj, dtype=None, copy=True, order="K"):
    host = np.array(obj.view(np.ndarray) if isinstance(obj, ndarray) else obj, dtype=dtype)
    out = _allocate(host.shape, host.dtype)
    out.view(np.ndarray)[...] = host
    return out


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


# ---------------------------------------------------------------- cupy.cuda
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
    """cupy.cuda.memory_hook.MemoryHook: while entered, told of every device allocation and free
    (``mem_size`` = the array's bytes; CuPy's pool would round them up to 512)."""

    name = "MemoryHook"

    def __enter__(self):
        _memory_hooks.append(self)
        return self

    def __exit__(self, *_):
        _memory_hooks.remove(self)

    def malloc_postprocess(self, **kwargs):
        pass

    def free_postprocess(self, **kwargs):
        pass


def get_default_memory_pool():
    return types.SimpleNamespace(used_bytes=lambda: memory["live"], free_all_blocks=lambda: None)


cuda = types.ModuleType("cupy.cuda")
cuda.Device = Device
cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                     getDeviceProperties=lambda device: {"name": b"CPU kernel emulator"})
cuda.get_current_stream = lambda: types.SimpleNamespace(synchronize=lambda: None)
memory_hook = types.ModuleType("cupy.cuda.memory_hook")
memory_hook.MemoryHook = MemoryHook
cuda.memory_hook = memory_hook


# ---------------------------------------------------------------- cuBLAS (cupy.cuda.cublas)
class MemoryPointer:
    def __init__(self, ptr: int):
        self.ptr = ptr


CUDA_R_32F, CUDA_R_64F = 0, 1  # cudaDataType_t
_DATA_TYPES = {CUDA_R_32F: np.dtype(np.float32), CUDA_R_64F: np.dtype(np.float64)}
# cublasComputeType_t -> the data type it computes; 77 (FAST_TF32) rounds float32 inputs to TF32
_COMPUTE_TYPES = {68: np.dtype(np.float32), 69: np.dtype(np.float32), 77: np.dtype(np.float32),
                  70: np.dtype(np.float64), 71: np.dtype(np.float64)}
_COMPUTE_32F_FAST_TF32 = 77
_CUBLAS_HANDLE = 0x7C0B1A5


def _device_matrices(call: str, pointer: int, dtype: np.dtype, shape: tuple[int, int], ld: int, stride: int,
                     batch: int) -> np.ndarray:
    """The (batch, rows, cols) column-major matrices cuBLAS would read at ``pointer``, as a writable view.

    Refuses a leading dimension below the rows and any matrix not wholly inside one live device array.
    """
    rows, cols = shape
    if ld < max(1, rows) or stride < 0:
        raise ValueError(f"emulator: {call}: leading dimension {ld} for {rows} rows, batch stride {stride}")
    item = dtype.itemsize
    extent = ((batch - 1) * stride + (cols - 1) * ld + rows) * item
    for raw in list(_guarded.values()):
        start = raw.ctypes.data + GUARD
        if start <= pointer and pointer + extent <= start + raw.size - 2 * GUARD:
            if (pointer - start) % item:
                raise ValueError(f"emulator: {call}: misaligned {dtype} pointer")
            offset = GUARD + pointer - start
            flat = raw[offset:offset + extent].view(dtype)
            return np.lib.stride_tricks.as_strided(flat, (batch, rows, cols), (stride * item, item, ld * item))
    raise RuntimeError(f"emulator: {call}: {extent} bytes at {pointer:#x} are not inside one device array")


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32 (10-bit mantissa, to nearest even), as tensor cores take them."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), rounded, x)


def gemm_strided_batched_ex(handle, transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb,
                            stride_b, beta, c, c_type, ldc, stride_c, batch_count, compute_type, algo) -> None:
    """cublasGemmStridedBatchedEx: C[i] = alpha op(A[i]) op(B[i]) + beta C[i], column-major, host scalars."""
    call = "cublasGemmStridedBatchedEx"
    if handle != _CUBLAS_HANDLE:
        raise ValueError(f"emulator: {call}: not a cuBLAS handle")
    dtype = _DATA_TYPES.get(a_type)
    if dtype is None or b_type != a_type or c_type != a_type or _COMPUTE_TYPES.get(compute_type) != dtype:
        raise ValueError(f"emulator: {call}: CUBLAS_STATUS_NOT_SUPPORTED (types {a_type}, {b_type}, {c_type}, "
                         f"compute {compute_type})")
    if min(m, n, k, batch_count) < 0 or transa not in (0, 1) or transb not in (0, 1):
        raise ValueError(f"emulator: {call}: CUBLAS_STATUS_INVALID_VALUE")
    if m == 0 or n == 0 or batch_count == 0:
        return
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    alpha, beta = scalar.from_address(alpha).value, scalar.from_address(beta).value
    out = _device_matrices(call, c, dtype, (m, n), ldc, stride_c, batch_count)
    if batch_count > 1 and stride_c < (n - 1) * ldc + m:
        raise ValueError(f"emulator: {call}: output matrices overlap (stride {stride_c})")
    product = np.zeros(out.shape, dtype)
    if k > 0:
        op_a = _device_matrices(call, a, dtype, (k, m) if transa else (m, k), lda, stride_a, batch_count)
        op_b = _device_matrices(call, b, dtype, (n, k) if transb else (k, n), ldb, stride_b, batch_count)
        op_a, op_b = (op_a.transpose(0, 2, 1) if transa else op_a), (op_b.transpose(0, 2, 1) if transb else op_b)
        if compute_type == _COMPUTE_32F_FAST_TF32:
            op_a, op_b = _tf32(op_a), _tf32(op_b)
        product = dtype.type(alpha) * np.matmul(op_a, op_b)
    if beta != 0:  # beta == 0: C is not read (NaN there does not propagate)
        product += dtype.type(beta) * out
    out[...] = product


cuda_cublas = types.ModuleType("cupy.cuda.cublas")
cuda_cublas.CUBLAS_OP_N, cuda_cublas.CUBLAS_OP_T = 0, 1
cuda_cublas.gemmStridedBatchedEx = gemm_strided_batched_ex
cuda.cublas = cuda_cublas
cuda.get_cublas_handle = lambda: _CUBLAS_HANDLE
cuda.runtime.CUDA_R_32F, cuda.runtime.CUDA_R_64F = CUDA_R_32F, CUDA_R_64F


def install() -> dict:
    """Make ``import cupy`` give this module; returns what sys.modules held before (for restore)."""
    names = {"cupy": sys.modules[__name__], "cupy.cuda": cuda, "cupy.cuda.memory_hook": memory_hook}
    previous = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    return previous


def uninstall(previous: dict) -> None:
    for name, module in previous.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
