"""Scale: y = x * s (+ b), s broadcast over axes [axis, axis + num_axes) of x.

``s`` is a learned parameter (one bottom) or the second bottom; with ``bias_term`` a
learned bias of the same shape is added (Caffe's Scale with its inner Bias layer).
num_axes 0 makes ``s`` a scalar; -1 covers every axis from ``axis`` on.
"""
from __future__ import annotations

from ..cuda.loader import view
from ..cuda.reduce import channel_sums
from ..cuda.scale_bias import scale_bias
from ..errors import NetError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("Scale")
class ScaleLayer(Layer):
    min_bottoms = 1
    exact_tops = 1
    # In place, the scale gradient's input x is kept by the layer (the top replaces it in the blob).
    saved_for_backward = ("x",)
    can_overwrite_input = True

    def backward_inputs(self) -> tuple[int, ...]:
        """x (for the scale gradient) unless in place; a second bottom s (for the input gradient)."""
        return tuple(i for i in range(len(self.param.bottom)) if i or not self._in_place())

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def _in_place(self) -> bool:
        return self.param.top[0] == self.param.bottom[0]

    def _input(self, bottoms):
        """The scale gradient's x: kept by forward when in place, else the bottom's data."""
        return self.x if self._in_place() else bottoms[0].data

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.scale_param
        if len(bottoms) > 2:
            raise NetError(f"layer '{self.name}': Scale takes 1 or 2 bottoms")
        if self.blobs:
            return
        x = bottoms[0]
        if len(bottoms) == 1:
            axis = self.canonical_axis(x, p.axis)
            if p.num_axes < -1:
                raise NetError(f"layer '{self.name}': num_axes must be >= -1")
            end = None if p.num_axes == -1 else axis + p.num_axes
            if end is not None and end > x.num_axes:
                raise NetError(f"layer '{self.name}': scale blob with num_axes {p.num_axes} starting at axis "
                               f"{axis} exceeds the bottom's {x.num_axes} axes")
            shape = x.shape[axis:end]
            filler = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=1)
            self.blobs.append(self.new_param(shape, filler))
        else:
            shape = bottoms[1].shape
        if p.bias_term:
            filler = p.bias_filler if p.HasField("bias_filler") else pb.FillerParameter(type="constant", value=0)
            self.blobs.append(self.new_param(shape, filler))

    def _scale_blob(self, bottoms):
        return bottoms[1] if len(bottoms) == 2 else self.blobs[0]

    def reshape(self, bottoms, tops) -> None:
        x, s = bottoms[0], self._scale_blob(bottoms)
        axis = 0 if s.num_axes == 0 else self.canonical_axis(x, self.param.scale_param.axis)
        if x.shape[axis:axis + s.num_axes] != s.shape:
            raise NetError(f"layer '{self.name}': scale shape {s.shape} does not match bottom shape {x.shape} "
                           f"at axis {axis}")
        self.dims = (x.count_range(0, axis), s.count, x.count_range(axis + s.num_axes))
        tops[0].reshape(x.shape)

    def forward_cpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        self.x = x if self.needs_backward and self._in_place() else None  # for the scale gradient
        outer, dim, inner = self.dims
        scale = self._scale_blob(bottoms).data.reshape(1, dim, 1)
        if self.may_overwrite_input(bottoms, tops):
            y = x.reshape(self.dims)
            y *= scale
        else:
            y = x.reshape(self.dims) * scale
        if self.param.scale_param.bias_term:
            y += self.blobs[-1].data.reshape(1, dim, 1)
        tops[0].data = y.reshape(x.shape)

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff.reshape(self.dims)
        s = self._scale_blob(bottoms)
        learned_scale = len(bottoms) == 1
        if self.param.scale_param.bias_term and self.param_propagate_down[-1]:
            self.blobs[-1].diff += dy.sum(axis=(0, 2)).reshape(self.blobs[-1].shape)
        if (learned_scale and self.param_propagate_down[0]) or (not learned_scale and propagate_down[1]):
            grad = (dy * self._input(bottoms).reshape(self.dims)).sum(axis=(0, 2)).reshape(s.shape)
            if learned_scale:
                s.diff += grad
            else:
                s.diff = grad
        if propagate_down[0]:
            dim = self.dims[1]
            bottoms[0].diff = (dy * s.data.reshape(1, dim, 1)).reshape(bottoms[0].shape)

    def forward_gpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        self.x = x if self.needs_backward and self._in_place() else None
        bias = self.blobs[-1].data if self.param.scale_param.bias_term else None
        tops[0].data = scale_bias(x, self.dims, self._scale_blob(bottoms).data, bias,
                                  out=self.output_buffer(bottoms, tops))

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        s = self._scale_blob(bottoms)
        learned_scale = len(bottoms) == 1
        want_bias = self.param.scale_param.bias_term and self.param_propagate_down[-1]
        want_scale = (learned_scale and self.param_propagate_down[0]) or (not learned_scale and propagate_down[1])
        if want_bias or want_scale:
            channel_sums(dy, self.dims, times=self._input(bottoms) if want_scale else None,
                         sums=view(self.blobs[-1].diff, -1) if want_bias else None, beta_sums=1.0,
                         dots=view(s.diff, -1) if want_scale else None, beta_dots=1.0 if learned_scale else 0.0)
        if propagate_down[0]:
            bottoms[0].diff = scale_bias(dy, self.dims, s.data)
