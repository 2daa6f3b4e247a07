"""Concat: joins bottoms along one axis (``axis``, or legacy ``concat_dim``).

Zero-copy concat: the net's memory plan may have a bottom's producer write straight into its slice of
the output (given as ``planned_outputs[0]``); those bottoms, listed in ``bottoms_in_place``, are not copied.
"""
from __future__ import annotations

import numpy as np

from .. import blas
from ..cuda.copy import concat_into, concat_slice
from ..errors import NetError
from ..layer import Layer, register


@register("Concat")
class ConcatLayer(Layer):
    min_bottoms = 1
    exact_tops = 1
    bottoms_in_place: frozenset = frozenset()  # set by the memory plan with planned_outputs

    def backward_inputs(self) -> tuple[int, ...]:
        return ()

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def output_slice(self, top, i: int):
        """The part of ``top`` (an array of the top's shape) that holds bottom ``i``."""
        return top[self._slice(i)]

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise NetError(f"layer '{self.name}': give either axis or concat_dim, not both")

    def reshape(self, bottoms, tops) -> None:
        p = self.param.concat_param
        first = bottoms[0]
        axis = self.canonical_axis(first, int(p.concat_dim) if p.HasField("concat_dim") else p.axis)
        self.axis = axis
        shape = list(first.shape)
        for b in bottoms[1:]:
            if b.num_axes != first.num_axes or any(
                    d1 != d2 for k, (d1, d2) in enumerate(zip(b.shape, first.shape)) if k != axis):
                raise NetError(f"layer '{self.name}': bottoms {first.shape} and {b.shape} differ outside "
                               f"concat axis {axis}")
            shape[axis] += b.shape[axis]
        tops[0].reshape(shape)
        self.offsets = [0]
        for b in bottoms:
            self.offsets.append(self.offsets[-1] + b.shape[axis])

    def _slice(self, i: int) -> tuple:
        return (slice(None),) * self.axis + (slice(self.offsets[i], self.offsets[i + 1]),)

    def _forward(self, bottoms, tops, copy_in) -> None:
        """Copy each bottom not already in place into the output with ``copy_in(out, data, i)``."""
        if len(bottoms) == 1:
            tops[0].share_data(bottoms[0])
            return
        out = self._output(tops)
        for i, b in enumerate(bottoms):
            if i not in self.bottoms_in_place:
                copy_in(out, b.data, i)
        tops[0].data = out

    def forward_cpu(self, bottoms, tops) -> None:
        """The copies run on the BLAS workers (NumPy copies release the GIL; large ones are memory-bound)."""
        copies = []
        self._forward(bottoms, tops, lambda out, data, i: copies.append((out, data, i)))
        blas.parallel(lambda worker, mine: [np.copyto(out[self._slice(i)], data) for out, data, i in mine], copies)

    def _output(self, tops):
        out = self.planned_outputs.get(0)
        return self.xp.empty(tops[0].shape, self.dtype) if out is None else out

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        """Each bottom diff is a copy of its slice of the top diff (the copies on the BLAS workers), or the
        slice itself when the memory plan donates the top diff (nothing reads it after)."""
        dy = tops[0].diff
        wanted = [i for i in range(len(bottoms)) if propagate_down[i]]
        if self.top_diff_donated:
            diffs = {i: dy[self._slice(i)] for i in wanted}
        else:
            diffs = {}  # filled by the BLAS workers
            blas.parallel(lambda worker, mine: diffs.update({i: dy[self._slice(i)].copy() for i in mine}), wanted)
        for i in wanted:
            bottoms[i].diff = diffs[i]

    def forward_gpu(self, bottoms, tops) -> None:
        self._forward(bottoms, tops, lambda out, data, i: concat_into(out, data, self.axis, self.offsets[i]))

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        for i, b in enumerate(bottoms):
            if propagate_down[i]:
                b.diff = concat_slice(dy, b.shape, self.axis, self.offsets[i])
