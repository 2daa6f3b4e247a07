"""BatchNorm exactly as Caffe: normalisation only (no scale/shift; use a Scale layer).

Parameter blobs: [0] running sum of means, [1] running sum of (unbiased) variances,
[2] the scale factor s: the statistics are blob / s.  In TRAIN (``use_global_stats``
false) batch statistics are used and the running sums updated; in TEST the stored ones.
"""
from __future__ import annotations

from ..cuda import batchnorm as gpu
from ..errors import NetError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("BatchNorm")
class BatchNormLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    # Backward needs 1 / std (std) and, with batch statistics, the normalised output (x_norm):
    # kept by the layer, as later in-place layers (Scale, ReLU) replace the top's array.
    saved_for_backward = ("std", "x_norm")
    can_overwrite_input = True

    def backward_inputs(self) -> tuple[int, ...]:
        return ()

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.batch_norm_param
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == pb.TEST
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        channels = bottoms[0].shape[1] if bottoms[0].num_axes > 1 else 1
        if not self.blobs:
            zero = pb.FillerParameter(type="constant", value=0)
            self.blobs = [self.new_param((channels,), zero), self.new_param((channels,), zero),
                          self.new_param((1,), zero)]
        # The statistics are not learned: their lr_mult is 0 whatever the prototxt says.
        for i in range(len(self.blobs)):
            if i == len(self.param.param):
                self.param.param.add(lr_mult=0)
            elif self.param.param[i].lr_mult != 0:
                raise NetError(f"layer '{self.name}': BatchNorm statistics cannot be learned: set lr_mult: 0 on its "
                               "params")

    def reshape(self, bottoms, tops) -> None:
        tops[0].reshape(bottoms[0].shape)

    def _channel_shape(self, x) -> tuple:
        return (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def forward_cpu(self, bottoms, tops) -> None:
        _, y, self.std = self.statistics_cpu(bottoms[0].data, self.may_overwrite_input(bottoms, tops))
        y /= self.std  # centered is ours (or the input we may overwrite): no third full-size array
        # Batch-statistics backward needs y (layers replace top arrays, never write into them).
        self.x_norm = y if self.needs_backward and not self.use_global_stats else None
        tops[0].data = y

    def statistics_cpu(self, x, overwrite: bool) -> tuple:
        """(mean, x - mean, std), mean and std shaped to broadcast over x; batch statistics also update
        the running sums.  With ``overwrite`` x itself may be centred."""
        axes = (0,) + tuple(range(2, x.ndim))
        cshape = self._channel_shape(x)
        if self.use_global_stats:
            mean, std = self.global_stats_cpu()
            mean = mean.reshape(cshape)
            if overwrite:
                centered = x
                centered -= mean
            else:
                centered = x - mean
            return mean, centered, std.reshape(cshape)
        mean = x.mean(axis=axes, dtype=x.dtype)
        centered = x - mean.reshape(cshape)
        var = (centered * centered).mean(axis=axes, dtype=x.dtype)
        self._update_running_stats(mean, var, x.size // x.shape[1])
        return mean.reshape(cshape), centered, self.std_cpu(var).reshape(cshape)

    def global_stats_cpu(self) -> tuple:
        """(mean, std) per channel from the stored running sums (divided by their scale factor)."""
        dt = self.dtype.type
        s = self.blobs[2].data[0]
        factor = dt(0) if s == 0 else dt(1) / s
        return self.blobs[0].data * factor, self.std_cpu(self.blobs[1].data * factor)

    def std_cpu(self, var):
        """sqrt(var + eps), rounded in var's dtype."""
        return self.xp.sqrt(var + var.dtype.type(self.eps))

    def _update_running_stats(self, mean, var, m: int) -> None:
        f = self.moving_average_fraction
        dt = mean.dtype.type
        scale = self.blobs[2].data
        scale *= dt(f)
        scale += dt(1)
        self.blobs[0].data = mean + dt(f) * self.blobs[0].data
        correction = dt(m / (m - 1) if m > 1 else 1)
        self.blobs[1].data = correction * var + dt(f) * self.blobs[1].data

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        if propagate_down[0]:
            bottoms[0].diff = self.input_gradient_cpu(tops[0].diff, self.x_norm, self.std)

    def input_gradient_cpu(self, dy, y, std):
        """dx = (dy - mean(dy) - mean(dy * y) * y) / std, y the normalised input (batch statistics), or
        dy / std (stored statistics)."""
        if self.use_global_stats:
            return dy / std
        axes = (0,) + tuple(range(2, y.ndim))
        cshape = self._channel_shape(y)
        n = y.size // y.shape[1]
        mean_dy_y = (dy * y).sum(axis=axes, dtype=y.dtype).reshape(cshape)
        mean_dy = dy.sum(axis=axes, dtype=y.dtype).reshape(cshape)
        dx = y * mean_dy_y
        dx += mean_dy
        dx *= y.dtype.type(-1.0 / n)
        dx += dy
        dx /= std
        return dx

    def gpu_dims(self, blob) -> tuple[int, int, int]:
        return blob.shape[0], blob.shape[1], blob.count_range(2)

    def forward_gpu(self, bottoms, tops) -> None:
        x = bottoms[0].data
        dims = self.gpu_dims(bottoms[0])
        running = [blob.data for blob in self.blobs]
        if self.use_global_stats:
            mean, self.std = gpu.global_stats(running, self.eps)
        else:
            mean, self.std = gpu.batch_stats(x, dims, self.eps, self.moving_average_fraction, running)
        y = gpu.normalize(x, dims, mean, self.std)
        self.x_norm = y if self.needs_backward and not self.use_global_stats else None
        tops[0].data = y

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        if propagate_down[0]:
            y = None if self.use_global_stats else self.x_norm
            bottoms[0].diff = gpu.backward(tops[0].diff, self.gpu_dims(bottoms[0]), self.std, y)
