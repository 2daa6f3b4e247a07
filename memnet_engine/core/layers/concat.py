"""Concat: joins bottoms along one axis (``axis``, or legacy ``concat_dim``)."""
from __future__ import annotations

from ..cuda.copy import concat_into, concat_slice
from ..errors import NetError
from ..layer import Layer, register


@register("Concat")
class ConcatLayer(Layer):
    min_bottoms = 1
    exact_tops = 1

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

    def forward_cpu(self, bottoms, tops) -> None:
        if len(bottoms) == 1:
            tops[0].share_data(bottoms[0])
            return
        out = tops[0].data
        for i, b in enumerate(bottoms):
            out[self._slice(i)] = b.data

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        for i, b in enumerate(bottoms):
            if propagate_down[i]:
                b.diff[...] = dy[self._slice(i)]

    # Each bottom is copied into a new top (no in-place writing of producers into the top: layers
    # replace their top arrays, so a view into a shared concat buffer would not survive).
    def forward_gpu(self, bottoms, tops) -> None:
        if len(bottoms) == 1:
            tops[0].share_data(bottoms[0])
            return
        out = self.xp.empty(tops[0].shape, self.dtype)
        for i, b in enumerate(bottoms):
            concat_into(out, b.data, self.axis, self.offsets[i])
        tops[0].data = out

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        for i, b in enumerate(bottoms):
            if propagate_down[i]:
                b.diff = concat_slice(dy, b.shape, self.axis, self.offsets[i])
