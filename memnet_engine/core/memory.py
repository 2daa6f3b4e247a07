"""Sizes checked before allocating: what a shape needs, and how much memory there can be.

Shapes come from files (a prototxt's ``input_dim`` and ``num_output``, a caffemodel's blob
shapes, an HDF5 dataset's dimensions); a few bytes can declare terabytes.  ``require`` turns
such a shape into a ``MemnetError`` naming what asked for it and the bytes, instead of a
``MemoryError`` (or a silent int64 wrap-around) somewhere later.  The bar is what the device
has (RAM + swap, the GPU's memory) or an address-space limit: sizes no run could allocate.
"""
from __future__ import annotations

import math
import os
from typing import Iterable

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from .errors import MemnetError, NetError

INT64_MAX = 2**63 - 1


def shape_bytes(shape: Iterable[int], itemsize: int) -> int:
    """Bytes of an array of ``shape`` (exact Python integers: no int64 overflow); a negative
    dimension is an error."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise MemnetError(f"negative dimension in shape {tuple(dims)}")
    return math.prod(dims) * int(itemsize)


def human(n: int) -> str:
    """``n`` bytes for a message: '12.3 GiB (13207024435 bytes)'."""
    value, unit = float(n), "bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit} ({n} bytes)" if n >= 1024 else f"{n} bytes"


def _machine_memory() -> "int | None":
    """RAM plus swap (MemTotal + SwapTotal): what no allocation can exceed, however busy the machine is."""
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return fields["MemTotal"] + fields.get("SwapTotal", 0) if "MemTotal" in fields else None


def _address_space_left() -> "int | None":
    """What RLIMIT_AS (ulimit -v) leaves this process, if it is set."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(0, soft - used)


def _gpu_memory() -> int:
    from .backend import cupy_module
    _, total = cupy_module().cuda.runtime.memGetInfo()
    return int(total)


def memory_limit(device: str = "cpu") -> "tuple[int, str] | None":
    """(bytes, what they are) that no allocation on ``device`` ('cpu' or 'gpu') can exceed, or None if unknown:
    the device's memory (the machine's RAM + swap), or what an address-space limit leaves, if lower.  Memory
    that other processes hold now is not subtracted: a check against it would fail by chance."""
    if device == "gpu":
        return _gpu_memory(), "memory of the GPU"
    known = [(n, what) for n, what in ((_machine_memory(), "memory of this machine (RAM + swap)"),
                                       (_address_space_left(), "address space left under ulimit -v"))
             if n is not None]
    return min(known) if known else None


def require(nbytes: int, what: str, device: str = "cpu", error: type = MemnetError) -> None:
    """Raise ``error`` naming ``what`` unless ``nbytes`` fits int64 and the memory there is."""
    problem = _too_big(nbytes, memory_limit(device))
    if problem:
        raise error(f"{what} needs {problem}")


def _too_big(nbytes: int, limit: "tuple[int, str] | None") -> "str | None":
    if nbytes > INT64_MAX:
        return f"{nbytes} bytes, more than a 64-bit size can hold"
    if limit is not None and nbytes > limit[0]:
        return f"{human(nbytes)}, more than the {human(limit[0])} of {limit[1]}"
    return None


class NetBudget:
    """The memory a net's blobs need, counted layer by layer while the net is built (data only: the
    least any use of the net needs), against the memory the device has (``memory_limit``)."""

    def __init__(self, net_name: str, device: str, itemsize: int):
        self.net_name, self.device, self.itemsize = net_name, device, itemsize
        self.limit = memory_limit(device)
        self.total = 0
        self._counted: set[int] = set()

    def add(self, layer, tops) -> None:
        """Count ``layer``'s parameters and new tops; a MemnetError names the layer once the total is too big."""
        shares_data = layer.type == "Split"  # its tops share its bottom's data (Caffe's SplitLayer)
        for kind, blobs in (("parameter", layer.blobs), ("top", [] if shares_data else tops)):
            for blob in blobs:
                if id(blob) in self._counted:
                    continue
                self._counted.add(id(blob))
                self.total += shape_bytes(blob.shape, self.itemsize)
                problem = _too_big(self.total, self.limit)
                if problem:
                    net = f"net '{self.net_name}', " if self.net_name else ""
                    raise NetError(f"{net}layer '{layer.name}' ({layer.type}): with its {kind} blob of shape "
                                   f"{blob.shape} the net's blobs need {problem}")
