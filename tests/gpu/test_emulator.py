"""The kernel emulator's own checks: without them the emulated GPU tests could pass vacuously."""
from __future__ import annotations

import numpy as np
import pytest

from memnet_engine.core.cuda.gemm import gemm
from memnet_engine.core.cuda.loader import get_kernel


def test_python_scalars_are_refused(emulated) -> None:
    x = emulated.zeros(8, np.float32)
    kernel = get_kernel("activation", "relu_forward", np.float32)
    with pytest.raises(TypeError, match="int for a int32"):
        kernel((1,), (256,), (8, x, np.float32(0), x))
    with pytest.raises(TypeError, match="float64 for a float32"):
        kernel((1,), (256,), (np.int32(8), x, np.float64(0), x))
    with pytest.raises(TypeError, match="float64 array"):
        kernel((1,), (256,), (np.int32(8), emulated.zeros(8), np.float32(0), x))


def test_out_of_bounds_write_is_caught(emulated) -> None:
    x, y = emulated.zeros(40, np.float32), emulated.zeros(36, np.float32)  # 16 bytes short
    kernel = get_kernel("activation", "relu_forward", np.float32)
    with pytest.raises(RuntimeError, match="outside"):
        kernel((1,), (256,), (np.int32(40), x, np.float32(0), y))


def test_non_contiguous_arrays_are_refused(emulated) -> None:
    x = emulated.zeros((4, 4), np.float32)
    kernel = get_kernel("activation", "relu_forward", np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        kernel((1,), (256,), (np.int32(16), x.T, np.float32(0), x))


def test_new_arrays_are_poisoned_and_mixing_with_numpy_fails(emulated) -> None:
    assert np.isnan(emulated.empty(3, np.float32).get()).all()
    with pytest.raises(TypeError):
        emulated.zeros(3) + np.zeros(3)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        emulated.zeros(3)[...] = np.ones(3)


def test_launches_and_transfers_are_counted_once_each(emulated) -> None:
    x = emulated.zeros(8, np.float32)  # a memset
    kernel = get_kernel("activation", "relu_forward", np.float32)
    emulated.reset_events()
    kernel((1,), (256,), (np.int32(8), x, np.float32(0), x))
    y = x * 2 + 1  # two element-wise kernels
    total = y.sum()  # one reduction (NumPy's sum is a ufunc reduce underneath: not counted again)
    y.fill(0)
    y[...] = x  # a device-to-device copy
    assert isinstance(total, emulated.ndarray) and total.shape == ()  # a 0-d device array, as in CuPy
    assert float(total) == 8.0 and bool(total) and total.item() == 8.0
    host = y.get()
    assert dict(emulated.events) == {"kernel": 1, "elementwise": 2, "reduction": 1, "memset": 1, "copy": 1, "d2h": 4}
    assert emulated.launches() == 6 and emulated.kernel_names == {"relu_forward<float>": 1}
    emulated.reset_events()
    emulated.asarray(host)
    product = emulated.empty((2, 2), np.float32)
    gemm(emulated.ones((2, 3), np.float32), emulated.ones((3, 2), np.float32), product)
    assert dict(emulated.events) == {"h2d": 1, "blas": 1, "elementwise": 2}  # ones() fills: element-wise


def test_memory_hooks_see_allocations_and_frees(emulated) -> None:
    class Hook(emulated.cuda.memory_hook.MemoryHook):
        def __init__(self):
            self.live = 0

        def malloc_postprocess(self, **kw):
            self.live += kw["mem_size"]

        def free_postprocess(self, **kw):
            self.live -= kw["mem_size"]

    with Hook() as hook:
        a = emulated.empty((4, 4), np.float32)
        assert hook.live == 64
        del a
        assert hook.live == 0
