"""What a net runs, and when each blob array lives: the schedule and the memory plan.

The schedule is the net's layers in order, except that each BatchNorm -> Scale -> ReLU chain runs as
one fused unit (layers/bn_scale_relu.py), and in planned passes (inference, solver steps) on the CPU, such
a unit and the convolution that alone reads it (a Winograd 3x3 or a pointwise one) run as one step
(layers/unit_convolution.py).
pycaffe's ``net.forward()`` / ``net.backward()`` run it keeping every blob.  The planned path
(``keep_intermediates=False``: inference, and a solver step through
``net.forward_backward(keep_intermediates=False)``) follows a memory plan made from what
each layer declares its backward reads (the contract in core/layer.py; Chainer's retain_inputs /
retain_outputs, made explicit):

- a blob's data is released after its last forward reader, unless a backward reads it: then after
  the last of those backwards;
- data a backward needs that its producer can recompute cheaply from inputs kept anyway (the fused
  unit's output, read by the next convolution's weight gradient) is released after forward too and
  recomputed just before the first backward that reads it;
- a diff lives from the backward of its consumer, which writes it, to the backward of its producer;
- what a layer saved for backward is dropped once its backward ran;
- a Concat's bottom whose producer can write into a given array (Eltwise SUM) is written straight
  into its slice of the Concat's output (zero-copy concat) where that slice is contiguous (always on
  the CPU, where NumPy takes strided outputs), nothing rewrites that bottom in place, and the bottom
  outlives the Concat (a backward reads it: training) or an earlier one already placed allocated the
  output: one copy kept instead of two.  Otherwise the bottom dies at the Concat and is copied (an
  output allocated early would hold its empty slots meanwhile);
- a layer that can write its output into its input's array (the fused unit, Scale, ReLU) does so
  when nothing reads that input afterwards (inference: each unit overwrites its input).

The net's outputs and inputs (and any blob asked for) are kept; a released array raises
``ReleasedBlobError`` when read.

On the CPU, freeing nearly every activation at the end of a step would let glibc hand that memory
back to the OS and the next step page-fault it all in again (about 40,000 faults, +25% time for a
M6R6 step at batch 8); the first planned pass therefore asks glibc to keep freed memory
(``keep_freed_host_memory``), as a caching allocator would.
"""
from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable

from .backend import CPU
from .errors import NetError
from .layer import Layer, add_loss
from .layers.bn_scale_relu import BatchNormScaleReLU, fusable
from .layers.concat import ConcatLayer
from .layers.convolution import ConvolutionLayer
from .layers.split import SplitLayer
from .layers.unit_convolution import UnitConvolution

if TYPE_CHECKING:
    from .net import Net


@dataclass
class Step:
    """One thing the net runs: a layer, or a fused unit of the net layers ``first..last``."""

    layer: Layer
    first: int
    last: int
    bottoms: list[str]
    tops: list[str]
    need_backward: bool
    propagate_down: list[bool]
    skipped: list[str] = field(default_factory=list)  # blobs of its layers that the step never makes


@dataclass
class Placement:
    """Bottom ``bottom`` of the Concat at step ``concat`` is written by step ``producer``'s top ``top``."""

    concat: int
    bottom: int
    producer: int
    top: int


@dataclass
class MemoryPlan:
    """Per step index: blobs to release after its forward / backward, producers to recompute before its
    backward; the zero-copy Concat placements; the steps that may overwrite their input."""

    free_after_forward: list[list[str]]
    free_after_backward: list[list[str]]
    free_diff_after_backward: list[list[str]]
    recompute_before_backward: list[list[int]]
    placements: list[Placement] = field(default_factory=list)
    overwrite_input: set[int] = field(default_factory=set)  # steps that may write into their dying input


class Schedule:
    """The steps of a net and the memory plans made for them (cached per range, kept blobs and shapes).
    It holds no reference to the net (no cycle: a net's arrays go as soon as the net does)."""

    def __init__(self, net: "Net", fuse: bool = True):
        self.layer_steps = [Step(layer, i, i, net.bottom_names[i], net.top_names[i], net.layer_need_backward[i],
                                 net.bottom_need_backward[i]) for i, layer in enumerate(net.layers)]
        self.units: dict[int, Step] = self._fused_units(net) if fuse else {}
        self.unit_of = {i: unit.first for unit in self.units.values() for i in range(unit.first, unit.last + 1)}
        self.unit_convolutions: dict[int, Step] = self._unit_convolutions(net)
        self.ran_fused: set[int] = set()  # units whose last forward ran fused (backward must match)
        self._plans: dict[tuple, MemoryPlan] = {}

    @staticmethod
    def _fused_units(net: "Net") -> dict[int, Step]:
        units, i = {}, 0
        while i + 2 < len(net.layers):
            chain = slice(i, i + 3)
            if net.layers[i].type == "BatchNorm" and fusable(
                    net.layers[chain], net.bottom_names[chain], net.top_names[chain], net.layer_need_backward[chain],
                    net.bottom_need_backward[chain], net.blobs[net.bottom_names[i][0]].shape):
                unit = BatchNormScaleReLU(*net.layers[chain])
                units[i] = Step(unit, i, i + 2, list(net.bottom_names[i]), list(net.top_names[i + 2]),
                                unit.needs_backward, [net.bottom_need_backward[i][0]])
                i += 3
            else:
                i += 1
        return units

    def _unit_convolutions(self, net: "Net") -> dict[int, Step]:
        """Per fused unit that only a convolution reads: the step running both (layers/unit_convolution.py),
        by the unit's first layer (planned passes use it: they read no blob but the kept ones)."""
        readers: dict[str, int] = {}  # by the steps outside the units (a unit's Scale and ReLU read h in place)
        for i, names in enumerate(net.bottom_names):
            for name in names if self.unit_of.get(i, i) == i else ():
                readers[name] = readers.get(name, 0) + 1
        fused = {}
        for first, unit in self.units.items():
            after = unit.last + 1
            if after >= len(net.layers) or not isinstance(net.layers[after], ConvolutionLayer):
                continue
            (h,) = unit.tops
            if net.bottom_names[after] != [h] or readers[h] != 1 or h in net.outputs:
                continue
            fused[first] = Step(UnitConvolution(unit.layer, net.layers[after]), first, after, list(unit.bottoms),
                                list(net.top_names[after]), unit.need_backward or net.layer_need_backward[after],
                                list(unit.propagate_down), skipped=[h])
        return fused

    def forward_steps(self, start: int, end: int, keep: "frozenset[str] | None" = None) -> list[Step]:
        """Steps running layers ``start..end``: units wholly inside fused, the others layer by layer.  ``keep``:
        the blobs a planned pass keeps (None: every blob, pycaffe's pass); a planned pass also runs a unit
        and the convolution that alone reads its output as one step where it can (``UnitConvolution``)."""
        steps, i = [], start
        while i <= end:
            both = self.unit_convolutions.get(i) if keep is not None else None
            if both is not None and both.last <= end and both.layer.applies and not keep.intersection(both.skipped):
                self.ran_fused.add(i)
                steps.append(both)
                i = both.last + 1
                continue
            unit = self.units.get(i)
            if unit is not None and unit.last <= end:
                self.ran_fused.add(i)
                steps.append(unit)
                i = unit.last + 1
                continue
            self.ran_fused.discard(self.unit_of.get(i))
            steps.append(self.layer_steps[i])
            i += 1
        return steps

    def backward_steps(self, start: int, end: int) -> list[Step]:
        """Steps back-propagating through layers ``end..start``, matching how forward ran them."""
        steps, i = [], end
        while i <= start:
            first = self.unit_of.get(i)
            if first in self.ran_fused:
                unit = self.units[first]
                if first < i or unit.last > start:
                    raise NetError(f"backward cannot start or end inside the fused unit '{unit.layer.name}' (its "
                                   "forward ran as one operation): give a range that holds all three layers")
                steps.append(unit)
                i = unit.last + 1
                continue
            steps.append(self.layer_steps[i])
            i += 1
        return steps

    def plan(self, net: "Net", steps: list[Step], keep: Iterable[str], backward: bool) -> MemoryPlan:
        keep = frozenset(keep)
        shapes = tuple(blob.shape for blob in net.blobs.values())
        key = (tuple(id(s) for s in steps), keep, backward, shapes)
        if key not in self._plans:
            self._plans.clear()  # one shape at a time: a new input size replaces the old plans
            self._plans[key] = make_plan(steps, net, keep, backward)
        return self._plans[key]


# ---------------------------------------------------------------------------------------- planning
class _Uses:
    """Who writes and reads each blob in a pass over ``steps``."""

    def __init__(self, steps: list[Step], keep: frozenset, backward: bool):
        self.steps, self.keep, self.backward = steps, keep, backward
        self.producer: dict[str, int] = {}  # the step that first writes a blob (not in place)
        self.writers: dict[str, list[int]] = {}  # every step writing it, in place ones too
        self.last_forward: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}  # the steps whose backward reads its data
        self.split_source: dict[str, str] = {}  # Split (or 1-bottom Concat) top -> the blob it shares
        for s, step in enumerate(steps):
            for name in step.tops:
                self.writers.setdefault(name, []).append(s)
                if name not in step.bottoms:
                    self.producer.setdefault(name, s)
            for name in step.bottoms + step.tops:
                self.last_forward[name] = s
            if isinstance(step.layer, SplitLayer) or (isinstance(step.layer, ConcatLayer) and len(step.bottoms) == 1):
                self.split_source.update((top, step.bottoms[0]) for top in step.tops)
            if backward and step.need_backward:
                needed = [step.bottoms[i] for i in step.layer.backward_inputs()]
                needed += [step.tops[i] for i in step.layer.backward_outputs()]
                for name in dict.fromkeys(needed):
                    self.readers.setdefault(name, []).append(s)
        self.aliases: dict[str, list[str]] = {}  # blob -> the Split tops sharing its array
        for top, source in self.split_source.items():
            self.aliases.setdefault(source, []).append(top)

    def rewritten(self, name: str) -> bool:
        """True if a step other than its producer writes the blob (an in-place layer)."""
        return self.writers.get(name, []) != [self.producer.get(name)]

    def recomputable(self, name: str) -> bool:
        """A blob a backward reads whose producer can recompute it from bottoms alive at that time."""
        if name not in self.readers or name in self.keep:
            return False
        p = self.producer[name]
        if not self.steps[p].layer.can_recompute_outputs or self.rewritten(name):
            return False
        first_use = max(self.readers[name])  # backward runs the last step first
        for bottom in self.steps[p].bottoms:
            if bottom in self.keep or bottom not in self.producer:  # never released by this plan
                continue
            # alive then only if kept for a backward no earlier (in time), never rewritten, not recomputed
            if bottom not in self.readers or min(self.readers[bottom]) > first_use or \
                    any(w > p for w in self.writers[bottom]) or self.recomputable(bottom):
                return False
        return True


def make_plan(steps: list[Step], net: "Net", keep: frozenset, backward: bool) -> MemoryPlan:
    """The memory plan of one pass over ``steps`` (forward, and backward too when ``backward``)."""
    n = len(steps)
    plan = MemoryPlan(*([[] for _ in range(n)] for _ in range(4)))
    uses = _Uses(steps, keep, backward)
    released = [name for name in uses.producer if name not in keep]
    recomputed = {name for name in released if uses.recomputable(name)}
    for name in released:
        reads = uses.readers.get(name)
        if reads and name not in recomputed:
            plan.free_after_backward[min(reads)].append(name)
        else:
            plan.free_after_forward[uses.last_forward[name]].append(name)
        if name in recomputed:
            plan.recompute_before_backward[max(reads)].append(uses.producer[name])
            plan.free_after_backward[min(reads)].append(name)
        if backward:
            plan.free_diff_after_backward[uses.producer[name]].append(name)
    plan.placements = _zero_copy_concats(net, uses)
    plan.overwrite_input = _dying_inputs(uses, plan.placements)
    return plan


def _zero_copy_concats(net: "Net", uses: _Uses) -> list[Placement]:
    """Where producers write straight into a Concat's output.  A bottom that a backward keeps anyway is placed,
    and then every later one (the output exists by then).  Bottoms that die at the Concat alone are placed in
    a forward-only pass when that lowers the peak from their first producer to the Concat (``_forward_peak``:
    e.g. MemNet's recursion outputs, read last by the gate's Concat), else copied: an early output holds empty
    slots meanwhile."""
    placements, placed = [], set()
    for c, step in enumerate(uses.steps):
        concat = step.layer
        if not isinstance(concat, ConcatLayer) or len(step.bottoms) < 2:
            continue
        if math.prod(net.blobs[step.tops[0]].shape[:concat.axis]) != 1 and concat.on_gpu:
            continue  # strided slices: the kernels write contiguous arrays
        candidates, first_kept = [], None  # placeable bottoms in producer order; the first one kept anyway
        sources = [uses.split_source.get(name, name) for name in step.bottoms]
        for i in sorted(range(len(sources)), key=lambda k: uses.producer.get(sources[k], -1)):
            source = sources[i]
            p = uses.producer.get(source)
            if source in placed or p is None:
                continue
            j = uses.steps[p].tops.index(source)
            shared = [source] + uses.aliases.get(source, [])
            if not uses.steps[p].layer.writes_planned_output(j) or any(uses.rewritten(a) for a in shared):
                continue  # rewritten in place somewhere: the slice would not hold what Concat must copy
            if first_kept is None and any(uses.last_forward[a] > c or a in uses.readers or a in uses.keep
                                          for a in shared):
                first_kept = len(candidates)
            candidates.append(Placement(c, i, p, j))
        chosen = candidates[len(candidates) if first_kept is None else first_kept:]
        if len(chosen) < len(candidates) and not uses.backward:
            window = range(candidates[0].producer, c + 1)  # outside it both choices hold the same
            if _forward_peak(net, uses, placements + candidates, window) < _forward_peak(net, uses, placements + chosen,
                                                                                         window):
                chosen = candidates
        placements += chosen
        placed.update(uses.steps[p.producer].tops[p.top] for p in chosen)
    return placements


def _forward_peak(net: "Net", uses: _Uses, placements: list[Placement], window: range) -> int:
    """Elements of blob data alive at the fullest step in ``window`` of a forward pass with ``placements`` (an
    estimate to choose them by: a Split's tops share their source's array; a placed blob lives in its Concat's
    output, which exists from the first placed producer on)."""
    placed = {uses.steps[p.producer].tops[p.top] for p in placements}
    starts = dict(uses.producer)
    for p in placements:
        top = uses.steps[p.concat].tops[0]
        starts[top] = min(starts[top], p.producer)
    change = [0] * (len(uses.steps) + 1)
    for name, start in starts.items():
        if name in placed or name in uses.split_source:
            continue
        shared = [name] + uses.aliases.get(name, [])
        end = len(uses.steps) if any(a in uses.keep for a in shared) else max(uses.last_forward[a] for a in shared) + 1
        size = math.prod(net.blobs[name].shape)
        change[start] += size
        change[end] -= size
    alive = peak = 0
    for s, delta in enumerate(change[:-1]):
        alive += delta
        if s in window:
            peak = max(peak, alive)
    return peak


def _dying_inputs(uses: _Uses, placements: list[Placement]) -> set[int]:
    """Steps whose layer may write its output into its first bottom's array: the bottom is read for the
    last time there, no backward needs it, and no other blob shares its array by then."""
    views_of = {}  # Concat output -> the placed blobs (and their Split tops) that view its slices
    for placement in placements:
        concat = uses.steps[placement.concat]
        source = uses.steps[placement.producer].tops[placement.top]
        views_of.setdefault(concat.tops[0], []).extend([source] + uses.aliases.get(source, []))
    placed = set(sum(views_of.values(), []))
    dying = set()
    for s, step in enumerate(uses.steps):
        if not step.layer.can_overwrite_input or not step.bottoms:
            continue
        name = step.bottoms[0]
        if (name in uses.keep or name not in uses.producer or name in uses.readers or name in step.tops
                or uses.last_forward[name] != s or step.bottoms.count(name) > 1
                or name in uses.split_source or name in uses.aliases or name in placed
                or any(uses.last_forward[view] >= s for view in views_of.get(name, ()))):
            continue
        dying.add(s)
    return dying


# ---------------------------------------------------------------------------------------- running
def _blobs(net: "Net", step: Step) -> tuple[list, list]:
    return [net.blobs[name] for name in step.bottoms], [net.blobs[name] for name in step.tops]


@lru_cache(maxsize=None)
def keep_freed_host_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (once per process; False where it is not glibc):
    arrays up to 32 MiB (its largest mmap threshold) come from the heap, and the heap keeps up to
    2 GiB of free memory instead of returning it to the OS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has no such tunables)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2 * 2**30))


def run_forward(net: "Net", steps: list[Step], plan: "MemoryPlan | None" = None):
    """Forward through ``steps``; with a plan, release and place blobs as it says.  Returns the loss."""
    if plan is not None and net.device == CPU:
        keep_freed_host_memory()
    loss = 0.0
    buffers: dict[int, object] = {}  # zero-copy Concat outputs, by concat step, until the Concat ran
    with net.workspace.one_pass():  # parameters are constant: see Workspace.per_pass
        for s, step in enumerate(steps):
            bottoms, tops = _blobs(net, step)
            layer = step.layer
            if plan is not None:
                _set_placements(net, steps, plan, s, buffers)
                layer.input_donated = s in plan.overwrite_input
            try:
                loss = add_loss(loss, layer.forward(bottoms, tops))  # reshape: NetError for a user's mistake
            finally:
                layer.input_donated = False
                if layer.planned_outputs:
                    layer.planned_outputs = {}
                    if isinstance(layer, ConcatLayer):
                        layer.bottoms_in_place = frozenset()
            if plan is not None:
                for name in plan.free_after_forward[s] + step.skipped:  # nothing may read a skipped blob's old data
                    net.blobs[name].release()
    return loss


def _set_placements(net: "Net", steps: list[Step], plan: MemoryPlan, s: int, buffers: dict) -> None:
    for placement in plan.placements:
        c = placement.concat
        if placement.producer == s:
            concat = steps[c].layer
            if c not in buffers:
                top = net.blobs[steps[c].tops[0]]
                buffers[c] = concat.xp.empty(top.shape, concat.dtype)
            steps[s].layer.planned_outputs[placement.top] = concat.output_slice(buffers[c], placement.bottom)
        if c == s and c in buffers:
            concat = steps[c].layer
            concat.planned_outputs = {0: buffers.pop(c)}
            concat.bottoms_in_place = frozenset(p.bottom for p in plan.placements if p.concat == c)


def run_backward(net: "Net", steps: list[Step], plan: "MemoryPlan | None" = None) -> None:
    """Backward through ``steps`` (last first); with a plan, recompute and release as it says."""
    for blob in net.blobs.values():
        blob.renew(data=False, diff=True)  # a diff nobody writes this pass reads as zeros, as in Caffe
    with net.workspace.one_pass():
        for s in reversed(range(len(steps))):
            step = steps[s]
            if plan is not None:
                for p in plan.recompute_before_backward[s]:
                    steps[p].layer.recompute_outputs(*_blobs(net, steps[p]))
            if step.need_backward:
                bottoms, tops = _blobs(net, step)
                donated = plan is not None and set(step.tops) <= set(plan.free_diff_after_backward[s])
                step.layer.top_diff_donated = donated
                try:
                    step.layer.backward(tops, step.propagate_down, bottoms)
                finally:
                    step.layer.top_diff_donated = False
            if plan is not None:
                step.layer.drop_saved()
                for name in plan.free_after_backward[s]:
                    net.blobs[name].release_data()
                for name in plan.free_diff_after_backward[s] + step.skipped:
                    net.blobs[name].release_diff()
