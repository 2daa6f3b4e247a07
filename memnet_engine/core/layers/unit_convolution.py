"""A fused BatchNorm -> Scale -> ReLU unit and the 3x3 convolution that alone reads its output, as one step
of planned inference on the CPU.

The convolution's Winograd input transform applies the unit to each input row it loads
(core/cpu/winograd.py ``convolve``'s prologue), so the unit's output is never written: one pass over the
activations fewer and no array for them.  The results are bit-identical to running the two steps (the
same float32 operations in the same order).  The schedule (core/memory_plan.py) uses this step only in
planned forward passes (``keep_intermediates=False``: inference, no backward follows), when the unit's
output is not kept, the unit uses stored statistics and the convolution runs by Winograd.
"""
from __future__ import annotations

from ..layer import Layer
from ..proto import caffe_pb2 as pb
from .bn_scale_relu import BatchNormScaleReLU
from .convolution import ConvolutionLayer


class UnitConvolution(Layer):
    """The fused unit ``unit`` then ``conv`` (their layers' blobs are used, not copied); forward only."""

    type = "BatchNorm+Scale+ReLU+Convolution"

    def __init__(self, unit: BatchNormScaleReLU, conv: ConvolutionLayer):
        param = pb.LayerParameter(name=f"{unit.name}+{conv.name}", type=self.type, bottom=unit.param.bottom,
                                  top=conv.param.top, phase=unit.phase)
        super().__init__(param, device=conv.device, dtype=conv.dtype, net_dir=conv.net_dir)
        self.unit, self.conv = unit, conv

    def backward_inputs(self) -> tuple[int, ...]:
        return ()

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    @property
    def applies(self) -> bool:
        """True when this step can run now: on the CPU, stored statistics, a Winograd convolution."""
        return not self.on_gpu and self.unit.bn.use_global_stats and self.conv.uses_winograd

    def reshape(self, bottoms, tops) -> None:
        self.unit.dims = self.unit.bn.gpu_dims(bottoms[0])
        self.conv.reshape(bottoms, tops)  # the unit's output has its input's shape

    def forward_cpu(self, bottoms, tops) -> None:
        mean, std = self.unit.bn.global_stats_cpu()
        gamma, beta = self.unit.gamma_beta()
        self.conv.forward_cpu(bottoms, tops, prologue=(mean, std, gamma, beta, self.unit.relu.negative_slope))
