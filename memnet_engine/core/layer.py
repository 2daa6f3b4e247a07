"""Layer base class and the registry that creates layers from their Caffe type name."""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import numpy as np

from . import profiler
from .backend import CPU, GPU
from .blob import Blob
from .errors import MemnetError, NetError
from .fillers import fill
from .memory import require, shape_bytes
from .proto import caffe_pb2 as pb

_REGISTRY: dict[str, type["Layer"]] = {}


def register(type_name: str) -> Callable[[type["Layer"]], type["Layer"]]:
    """Class decorator: make ``type_name`` in a prototxt create this layer class."""

    def wrap(cls: type["Layer"]) -> type["Layer"]:
        cls.type = type_name
        _REGISTRY[type_name] = cls
        return cls

    return wrap


def layer_types() -> list[str]:
    return sorted(_REGISTRY)


def create_layer(param: pb.LayerParameter, device: str = CPU, dtype=np.float32, net_dir: str = ".") -> "Layer":
    """Instantiate the registered layer for ``param.type``."""
    cls = _REGISTRY.get(param.type)
    if cls is None:
        raise NetError(f"layer '{param.name}': unknown layer type '{param.type}' "
                       f"(supported: {', '.join(layer_types())})")
    return cls(param, device=device, dtype=dtype, net_dir=net_dir)


class Layer:
    """One computation of the net, with Caffe's verbs.

    Subclasses implement ``reshape`` and ``forward_cpu`` / ``backward_cpu`` (NumPy), and
    ``forward_gpu`` / ``backward_gpu`` (CuPy kernels) where the GPU path differs.
    Backward *overwrites* bottom diffs and *accumulates* into parameter diffs, as Caffe does.

    The memory contract (Chainer's retain_inputs / retain_outputs, made explicit; the net's memory
    plan, core/memory_plan.py, relies on it and tests/test_memory_contract.py checks it):

        Backward reads only top diffs, parameter blobs, the data of the bottoms listed by
        ``backward_inputs()`` and of the tops listed by ``backward_outputs()`` (as they are when
        backward runs: for an in-place blob, the last in-place layer's output), and the arrays
        forward stored in the attributes named by ``saved_for_backward`` (an in-place layer that
        needs its input keeps it there).  Forward keeps no other array.  Everything else may be
        released as soon as forward has read it.  Forward gives each top a new array (or the one
        in ``planned_outputs``) unless it may overwrite its input; backward gives bottoms new diffs.
    """

    type: ClassVar[str] = ""
    # Blob-count constraints checked at setup (None = unconstrained).
    exact_bottoms: ClassVar[int | None] = None
    min_bottoms: ClassVar[int | None] = None
    exact_tops: ClassVar[int | None] = None
    min_tops: ClassVar[int | None] = None
    # Loss layers weight their first top by 1 unless loss_weight says otherwise.
    is_loss: ClassVar[bool] = False
    # Attributes that forward sets and backward reads (see the memory contract above); the planned
    # path drops them after backward.
    saved_for_backward: ClassVar[tuple[str, ...]] = ()
    # True if recompute_outputs can rebuild the tops for backward (then the plan need not keep them).
    can_recompute_outputs: ClassVar[bool] = False
    # True if forward writes top 0 into bottom 0's array when ``may_overwrite_input`` says so.
    can_overwrite_input: ClassVar[bool] = False

    def __init__(self, param: pb.LayerParameter, device: str = CPU, dtype=np.float32, net_dir: str = "."):
        self.param = pb.LayerParameter()
        self.param.CopyFrom(param)
        self.name = param.name
        self.phase = param.phase if param.HasField("phase") else pb.TEST
        self.device = device
        self.dtype = np.dtype(dtype)
        self.net_dir = net_dir
        self.blobs: list[Blob] = []
        self.param_propagate_down: list[bool] = []
        self.loss_weights: list[float] = []
        # Set by the Net: False when no backward will run, so forward need not keep inputs.
        self.needs_backward = True
        # Set by the net's memory plan for one forward: top index -> the array to write it into
        # (a slice of a Concat's output: zero-copy concat); and whether bottom 0 dies here, so that
        # its array may take top 0.
        self.planned_outputs: dict[int, object] = {}
        self.input_donated = False
        # Set by the memory plan for one backward: nothing reads the top diffs after it (views of them may
        # become the bottom diffs).
        self.top_diff_donated = False

    # ------------------------------------------------------------------ set-up
    @property
    def xp(self):
        from .backend import array_module
        return array_module(self.device)

    @property
    def on_gpu(self) -> bool:
        return self.device == GPU

    def setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Check blob counts, create parameters, shape the tops, set loss weights."""
        self._check_counts(len(bottoms), len(tops))
        self.layer_setup(bottoms, tops)
        self.param_propagate_down = [True] * len(self.blobs)
        self.reshape(bottoms, tops)
        self._set_loss_weights(tops)

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """One-time set-up: read options, create parameter blobs (unless loaded)."""

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        raise NotImplementedError

    def new_param(self, shape: Sequence[int], filler: pb.FillerParameter) -> Blob:
        """A parameter blob of ``shape`` on this layer's device, filled by ``filler`` (its size checked first:
        the filler draws float64 values on the host)."""
        try:
            require(shape_bytes(shape, 8 + self.dtype.itemsize), f"a parameter of shape {tuple(shape)}")
        except MemnetError as ex:
            raise NetError(f"layer '{self.name}': {ex}") from None
        blob = Blob(shape, self.dtype, self.device)
        try:
            blob.data = self.xp.asarray(fill(filler, tuple(shape), self.dtype))
        except NetError as ex:
            raise NetError(f"layer '{self.name}': {ex}") from None
        return blob

    def canonical_axis(self, blob: Blob, axis: int) -> int:
        """Caffe's CanonicalAxisIndex of an axis the prototxt gives; out of range is a NetError naming the layer."""
        try:
            return blob.canonical_axis(axis)
        except ValueError as ex:
            raise NetError(f"layer '{self.name}': {ex}") from None

    def _check_counts(self, n_bottom: int, n_top: int) -> None:
        def bad(what: str, n: int, rule: str) -> NetError:
            return NetError(f"layer '{self.name}' ({self.type}) takes {rule} {what} blob(s), got {n}")

        if self.exact_bottoms is not None and n_bottom != self.exact_bottoms:
            raise bad("bottom", n_bottom, str(self.exact_bottoms))
        if self.min_bottoms is not None and n_bottom < self.min_bottoms:
            raise bad("bottom", n_bottom, f"at least {self.min_bottoms}")
        if self.exact_tops is not None and n_top != self.exact_tops:
            raise bad("top", n_top, str(self.exact_tops))
        if self.min_tops is not None and n_top < self.min_tops:
            raise bad("top", n_top, f"at least {self.min_tops}")

    def _set_loss_weights(self, tops: Sequence[Blob]) -> None:
        weights = list(self.param.loss_weight)
        if not weights and self.is_loss:
            weights = [1.0]
            self.param.loss_weight.append(1.0)
        if weights and len(weights) != len(tops):
            raise NetError(f"layer '{self.name}': loss_weight must be unspecified or given once per top "
                           f"({len(tops)} tops, {len(weights)} loss_weight values)")
        self.loss_weights = weights + [0.0] * (len(tops) - len(weights))
        for top, w in zip(tops, self.loss_weights):
            if w:
                top.diff[...] = w

    def may_overwrite_input(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> bool:
        """True when the layer can write its result into the input array itself: the memory plan
        found that nothing reads the input after this layer, or an in-place layer runs no backward
        (otherwise layers replace top arrays so that retained inputs stay valid; like Caffe's
        in-place layers, this also changes what a Split shares that array with)."""
        return self.input_donated or (tops[0] is bottoms[0] and not self.needs_backward)

    def output_buffer(self, bottoms: Sequence[Blob], tops: Sequence[Blob]):
        """The input array itself when a kernel may write its result there (see above), else None."""
        x = bottoms[0].data
        return x if self.may_overwrite_input(bottoms, tops) and x.flags.c_contiguous else None

    # ------------------------------------------------------------------ memory contract
    def backward_inputs(self) -> tuple[int, ...]:
        """Indices of the bottoms whose data backward reads (the safe default: all of them)."""
        return tuple(range(len(self.param.bottom)))

    def backward_outputs(self) -> tuple[int, ...]:
        """Indices of the tops whose data backward reads (the safe default: all of them)."""
        return tuple(range(len(self.param.top)))

    def writes_planned_output(self, top_index: int) -> bool:
        """True if forward writes top ``top_index`` into ``planned_outputs[top_index]`` when given one."""
        return False

    def recompute_outputs(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Recompute the tops' data, exactly as forward made them, from the bottoms and the saved state,
        without side effects (see ``can_recompute_outputs``)."""
        raise NotImplementedError(f"layer type {self.type} cannot recompute its outputs")

    def drop_saved(self) -> None:
        """Forget what forward saved for backward (after backward ran)."""
        for name in self.saved_for_backward:
            setattr(self, name, None)

    def loss(self, top_index: int) -> float:
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    # ------------------------------------------------------------------ compute
    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]):
        """Reshape, run forward on the blobs' device, and return this layer's weighted loss: a float on
        the CPU; on the GPU a 0-d float64 device array (reading it would wait for the device), or the
        float 0.0 when the layer has no loss."""
        for top in tops:
            if not any(top is bottom for bottom in bottoms):
                top.renew()  # forward writes it again
        self.reshape(bottoms, tops)
        with profiler.layer_timer(self):
            if self.on_gpu:
                self.forward_gpu(bottoms, tops)
            else:
                self.forward_cpu(bottoms, tops)
        loss = 0.0
        for top, w in zip(tops, self.loss_weights):
            if w:
                total = top.data.sum(dtype=np.float64) if self.on_gpu else float(top.data.sum())
                loss = add_loss(loss, total if w == 1 else w * total)
        return loss

    def backward(self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]) -> None:
        for bottom, wanted in zip(bottoms, propagate_down):
            if wanted:
                bottom.renew(data=False, diff=True)  # backward writes it again
        with profiler.layer_timer(self, backward=True):
            if self.on_gpu:
                self.backward_gpu(tops, propagate_down, bottoms)
            else:
                self.backward_cpu(tops, propagate_down, bottoms)

    def forward_cpu(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        raise NotImplementedError

    def backward_cpu(self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]) -> None:
        raise NotImplementedError(f"layer type {self.type} has no CPU backward")

    def forward_gpu(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        raise NotImplementedError(f"layer type {self.type} has no GPU forward")

    def backward_gpu(self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]) -> None:
        raise NotImplementedError(f"layer type {self.type} has no GPU backward")

    def __repr__(self) -> str:
        return f"<{self.type} layer '{self.name}'>"


def add_loss(total, term):
    """``total + term`` where either may be the float 0.0 of a layer without loss (no device work for it)."""
    if isinstance(term, float) and term == 0.0:
        return total
    if isinstance(total, float) and total == 0.0:
        return term
    return total + term


class DataLayer(Layer):
    """A layer that only produces tops (Input, HDF5Data): nothing to back-propagate."""

    exact_bottoms = 0

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        pass

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        pass
