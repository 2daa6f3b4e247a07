"""The kernel emulator's own checks: without them the emulated GPU tests could pass vacuously."""
from __future__ import annotations

import numpy as np
import pytest

from memnet_engine.core.cuda.loader import get_kernel


@pytest.fixture
def emulated(gpu):
    if not hasattr(gpu, "install"):
        pytest.skip("checks of the emulator only")
    return gpu


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
