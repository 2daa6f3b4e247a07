"""ReLU with Caffe's optional ``negative_slope`` (leaky ReLU); works in place."""
from __future__ import annotations

from ..cuda import activation as gpu
from ..layer import Layer, register


@register("ReLU")
class ReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottoms, tops) -> None:
        self.negative_slope = float(self.param.relu_param.negative_slope)

    def reshape(self, bottoms, tops) -> None:
        tops[0].reshape(bottoms[0].shape)

    def forward_cpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        if self.negative_slope:
            tops[0].data = self.xp.where(x > 0, x, x * x.dtype.type(self.negative_slope))
        else:
            tops[0].data = self.xp.maximum(x, 0)

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        if not propagate_down[0]:
            return
        # In place, bottom data is the output; its sign is the input's (slope >= 0).
        x, dy = bottoms[0].data, tops[0].diff
        slope = x.dtype.type(self.negative_slope)
        bottoms[0].diff = self.xp.where(x > 0, dy, dy * slope)

    def forward_gpu(self, bottoms, tops) -> None:
        tops[0].data = gpu.relu_forward(bottoms[0].data, self.negative_slope)

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        if propagate_down[0]:
            bottoms[0].diff = gpu.relu_backward(bottoms[0].data, tops[0].diff, self.negative_slope)
