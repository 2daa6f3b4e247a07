"""MemNet's unit, BatchNorm -> Scale -> ReLU, run as ONE operation with the three Caffe layers' semantics.

A net whose layers hold the chain (BatchNorm x -> h, then Scale and ReLU in place on h: nobody else
can read h in between) runs it through this unit (``fusable`` says when; the net's schedule in
core/memory_plan.py builds it).  The three layers keep their parameters, flags and names: running
sums with Caffe's m / (m - 1) correction, use_global_stats by phase, eps, Scale with or without bias
and its accumulated parameter gradients, ReLU's negative_slope.  Per channel c:

    z = (x - mean[c]) / std[c],   u = z * gamma[c] + beta[c],   h = u > 0 ? u : u * negative_slope

The same passes run on both devices (CPU: numba kernels in core/cpu/bn_scale_relu.py; GPU: CUDA
kernels in kernels/bn_scale_relu.cu).  Forward: per-channel statistics, then one pass writing h.
Backward: one reduction (Scale's gradients and BatchNorm's two sums), then one pass writing dx.
Backward reads x and h (h > 0 is the mask that Caffe's in-place ReLU reads; on the CPU it may take it
from x instead); h can be recomputed from x and the saved statistics, so the net's memory plan need not
keep it (In-Place Activated BatchNorm's trick).  After backward the top diff
holds what Caffe's in-place blob holds: BatchNorm's top gradient dz (on the CPU, a planned pass that
frees the top diff there leaves it unwritten).
"""
from __future__ import annotations

from ..cpu import bn_scale_relu as cpu
from ..cuda import batchnorm as bn_gpu
from ..cuda import bn_scale_relu as gpu
from ..layer import Layer
from ..proto import caffe_pb2 as pb
from .batch_norm import BatchNormLayer
from .relu import ReLULayer
from .scale import ScaleLayer


def fusable(layers: list, bottoms: list, tops: list, need_backward: list, propagate_down: list,
            x_shape: tuple) -> bool:
    """True if ``layers`` (three consecutive net layers, with their bottom and top names, backward flags
    and the shape of the first bottom) are a BatchNorm -> in-place Scale -> in-place ReLU chain this
    unit runs: a per-channel Scale (learned, axis 1), no loss weights, Caffe's own backward flags."""
    bn, scale, relu = layers
    if not (isinstance(bn, BatchNormLayer) and isinstance(scale, ScaleLayer) and isinstance(relu, ReLULayer)):
        return False
    (x,), (h,) = bottoms[0], tops[0]
    if bottoms[1:] != [[h], [h]] or tops[1:] != [[h], [h]] or (x == h and any(need_backward)):
        return False
    p = scale.param.scale_param
    if len(x_shape) < 2 or p.axis not in (1, 1 - len(x_shape)) or p.num_axes != 1:
        return False
    if len(scale.blobs) != 1 + p.bias_term or scale.blobs[0].shape != (x_shape[1],):
        return False
    if any(layer.loss(0) for layer in layers):
        return False
    # ReLU and Scale back-propagate together, and Scale into BatchNorm exactly when BatchNorm runs backward.
    return need_backward[2] == need_backward[1] == propagate_down[2][0] and propagate_down[1][0] == need_backward[0]


class BatchNormScaleReLU(Layer):
    """The fused unit over a net's BatchNorm, Scale and ReLU layers (their blobs are used, not copied)."""

    type = "BatchNorm+Scale+ReLU"
    saved_for_backward = ("mean", "std")
    can_recompute_outputs = True
    can_overwrite_input = True

    def __init__(self, bn: BatchNormLayer, scale: ScaleLayer, relu: ReLULayer):
        param = pb.LayerParameter(name=f"{bn.name}+{scale.name}+{relu.name}", type=self.type,
                                  bottom=bn.param.bottom, top=relu.param.top, phase=bn.phase)
        super().__init__(param, device=bn.device, dtype=bn.dtype, net_dir=bn.net_dir)
        self.bn, self.scale, self.relu = bn, scale, relu
        self.needs_backward = bn.needs_backward or scale.needs_backward or relu.needs_backward
        self.mean = self.std = None

    def backward_inputs(self) -> tuple[int, ...]:
        return (0,)

    def backward_outputs(self) -> tuple[int, ...]:
        return (0,)

    def reshape(self, bottoms, tops) -> None:
        tops[0].reshape(bottoms[0].shape)
        self.dims = self.bn.gpu_dims(bottoms[0])  # (outer, channels, inner)

    def gamma_beta(self):
        blobs = self.scale.blobs
        return blobs[0].data, blobs[1].data if len(blobs) > 1 else None

    def _param_diffs(self):
        """(gamma diff, beta diff) to accumulate into, None where Scale learns nothing."""
        blobs, wanted = self.scale.blobs, self.scale.param_propagate_down
        learns = self.scale.needs_backward
        return tuple(blobs[k].diff if learns and k < len(blobs) and wanted[k] else None for k in (0, 1))

    # ------------------------------------------------------------------ CPU
    def forward_cpu(self, bottoms, tops) -> None:
        mean, std = self.statistics_cpu(bottoms[0].data)
        tops[0].data = self._forward(bottoms[0].data, mean, std, self.output_buffer(bottoms, tops))

    def statistics_cpu(self, x) -> tuple:
        """(mean, std) per channel, stored or of the batch (which updates the running sums); kept for backward."""
        bn = self.bn
        if bn.use_global_stats:
            mean, std = bn.global_stats_cpu()
        else:
            mean, var = cpu.batch_moments(x, self.dims)
            bn._update_running_stats(mean, var, self.dims[0] * self.dims[2])
            std = bn.std_cpu(var)
        self.mean, self.std = (mean, std) if self.needs_backward else (None, None)
        return mean, std

    def _forward(self, x, mean, std, out=None):
        """The unit's output from its input and statistics into ``out`` (or a new array), by the device's kernels."""
        gamma, beta = self.gamma_beta()
        kernels = gpu if self.on_gpu else cpu
        return kernels.forward(x, self.dims, mean, std, gamma, beta, self.relu.negative_slope, out=out)

    def recompute_outputs(self, bottoms, tops) -> None:
        if self.mean is None:
            raise RuntimeError(f"'{self.name}': no statistics to recompute the output from (forward ran "
                               "without backward, or backward already ran)")
        tops[0].data = self._forward(bottoms[0].data, self.mean, self.std)

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        self._backward(cpu, tops, propagate_down, bottoms)

    # ------------------------------------------------------------------ GPU
    def forward_gpu(self, bottoms, tops) -> None:
        bn, x = self.bn, bottoms[0].data
        running = [blob.data for blob in bn.blobs]
        if bn.use_global_stats:
            mean, std = bn_gpu.global_stats(running, bn.eps)
        else:
            mean, std = gpu.batch_stats(x, self.dims, bn.eps, bn.moving_average_fraction, running)
        self.mean, self.std = (mean, std) if self.needs_backward else (None, None)
        tops[0].data = self._forward(x, mean, std, self.output_buffer(bottoms, tops))

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        self._backward(gpu, tops, propagate_down, bottoms)

    def _backward(self, kernels, tops, propagate_down, bottoms) -> None:
        dx = self.gradients(kernels, bottoms[0].data, tops[0].data, tops[0].diff, propagate_down[0],
                            keep_top=self.top_diff_donated)  # CPU: nothing reads the top diff after, no dz
        if dx is not None:
            bottoms[0].diff = dx

    def gradients(self, kernels, x, h, dh, propagate: bool, keep_top: bool = False):
        """Scale's gradients (accumulated) and the input's (returned; None unless ``propagate`` and BatchNorm
        runs backward), by the device's kernels from x, the statistics, the output h (None on the CPU: the
        ReLU's mask from x) and its diff dh (overwritten, see the kernels, unless ``keep_top`` on the CPU: dh
        is scratch that nothing reads after)."""
        gamma, beta = self.gamma_beta()
        gamma_diff, beta_diff = self._param_diffs()
        cpu_options = {} if kernels is gpu else {"beta": beta, "keep_top": keep_top}
        return kernels.backward(x, h, dh, self.dims, self.mean, self.std, gamma, self.relu.negative_slope,
                                batch_stats=not self.bn.use_global_stats, gamma_diff=gamma_diff,
                                beta_diff=beta_diff, want_dx=self.bn.needs_backward and propagate,
                                top_gets_dz=self.bn.needs_backward, **cpu_options)
