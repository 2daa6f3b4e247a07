"""EuclideanLoss: sum((a - b)^2) / (2 N), N the size of the first axis."""
from __future__ import annotations

from ..cuda.loss import euclidean_backward, euclidean_forward
from ..errors import NetError
from ..layer import Layer, register


@register("EuclideanLoss")
class EuclideanLossLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    saved_for_backward = ("difference",)

    def backward_inputs(self) -> tuple[int, ...]:
        return ()

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def reshape(self, bottoms, tops) -> None:
        if bottoms[0].count_range(1) != bottoms[1].count_range(1):
            raise NetError(f"layer '{self.name}': inputs {bottoms[0].shape} and {bottoms[1].shape} differ in size")
        tops[0].reshape(())

    def forward_cpu(self, bottoms, tops) -> None:
        a, b = bottoms[0].data, bottoms[1].data.reshape(bottoms[0].shape)
        self.difference = a - b
        d = self.difference.ravel()
        tops[0].data[...] = d.dot(d) / bottoms[0].num / a.dtype.type(2)

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        for i, sign in enumerate((1.0, -1.0)):
            if propagate_down[i]:
                alpha = sign * tops[0].diff.reshape(-1)[0] / bottoms[i].num
                bottoms[i].diff[...] = (alpha * self.difference).reshape(bottoms[i].shape)

    def forward_gpu(self, bottoms, tops) -> None:
        a, b = bottoms[0].data, bottoms[1].data.reshape(bottoms[0].shape)
        self.difference, tops[0].data = euclidean_forward(a, b, bottoms[0].num)

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        for i, sign in enumerate((1.0, -1.0)):
            if propagate_down[i]:
                dx = euclidean_backward(self.difference, tops[0].diff, sign, bottoms[i].num)
                bottoms[i].diff = dx.reshape(bottoms[i].shape)
