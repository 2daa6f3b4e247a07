"""CPU kernels compiled by numba: Winograd convolution (``winograd``), direct convolution (``direct``), the
fused BatchNorm unit (``bn_scale_relu``)."""
from __future__ import annotations

from typing import Callable

from numba import njit


def kernel(**options) -> Callable:
    """``numba.njit(nogil=True, cache=True, **options)``, uncached where numba finds no writable folder for
    its cache (a read-only install and home): the kernels then compile again in each process (seconds)."""
    def compiled(function: Callable) -> Callable:
        try:
            return njit(nogil=True, cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
            return njit(nogil=True, **options)(function)
    return compiled
