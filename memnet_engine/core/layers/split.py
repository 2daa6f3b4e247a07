"""Split: hands one blob to several readers; their gradients are summed (inserted automatically)."""
from __future__ import annotations

from ..cuda.eltwise import weighted_sum
from ..layer import Layer, register


@register("Split")
class SplitLayer(Layer):
    exact_bottoms = 1
    min_tops = 1

    def backward_inputs(self) -> tuple[int, ...]:
        return ()

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def reshape(self, bottoms, tops) -> None:
        for top in tops:
            top.reshape(bottoms[0].shape)

    def forward_cpu(self, bottoms, tops) -> None:
        for top in tops:  # share at forward time: the bottom's array may have been replaced since reshape
            top.share_data(bottoms[0])

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        """The bottom diff is the sum of the top diffs: into the first top diff itself when the memory plan
        donates them (nothing reads them after), else into the bottom's own array."""
        if not propagate_down[0]:
            return
        if self.top_diff_donated:
            total = tops[0].diff
            for top in tops[1:]:
                total += top.diff
            bottoms[0].diff = total
            return
        if len(tops) == 1:
            bottoms[0].diff[...] = tops[0].diff
            return
        total = bottoms[0].diff
        self.xp.add(tops[0].diff, tops[1].diff, out=total)
        for top in tops[2:]:
            total += top.diff

    forward_gpu = forward_cpu

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        if propagate_down[0]:
            bottoms[0].diff = weighted_sum([top.diff for top in tops], [1.0] * len(tops))
