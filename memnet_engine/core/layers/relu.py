"""ReLU with Caffe's optional ``negative_slope`` (leaky ReLU); works in place."""
from __future__ import annotations

from ..cuda import activation as gpu
from ..layer import Layer, register


@register("ReLU")
class ReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    can_overwrite_input = True

    def backward_inputs(self) -> tuple[int, ...]:
        return (0,)  # the input's sign; in place, the output's (as in Caffe)

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def layer_setup(self, bottoms, tops) -> None:
        self.negative_slope = float(self.param.relu_param.negative_slope)

    def reshape(self, bottoms, tops) -> None:
        tops[0].reshape(bottoms[0].shape)

    def gain(self, x):
        """1 where x > 0, else negative_slope (a multiply is far faster than np.where)."""
        positive = x > 0
        gain = positive.astype(x.dtype)
        if self.negative_slope:  # exactly 1 or exactly the slope
            gain += (~positive) * x.dtype.type(self.negative_slope)
        return gain

    def forward_cpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        out = x if self.may_overwrite_input(bottoms, tops) else None
        if self.negative_slope:
            tops[0].data = self.xp.multiply(x, self.gain(x), out=out)
        else:
            tops[0].data = self.xp.maximum(x, 0, out=out)

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        if not propagate_down[0]:
            return
        # In place, bottom data is the output; its sign is the input's (slope >= 0).
        x, dy = bottoms[0].data, tops[0].diff
        bottoms[0].diff = dy * self.gain(x)

    def forward_gpu(self, bottoms, tops) -> None:
        tops[0].data = gpu.relu_forward(bottoms[0].data, self.negative_slope, out=self.output_buffer(bottoms, tops))

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        if propagate_down[0]:
            bottoms[0].diff = gpu.relu_backward(bottoms[0].data, tops[0].diff, self.negative_slope)
