"""A fused BatchNorm -> Scale -> ReLU unit and the convolution that alone reads its output, as one step of
the CPU's planned passes (inference, and solver steps), where the convolution can apply the unit to its input
as it reads it: a 3x3 Winograd convolution (its input transform, core/cpu/winograd.py ``convolve``'s
prologue) or a pointwise GEMM (each chunk's columns, layers/convolution.py ``_cpu_columns``).

The unit's output h is never stored.  Forward: the unit's statistics, then the convolution, which applies
the unit to each input row or chunk it loads.  Backward: the convolution's weight gradient applies the unit
the same way, its input gradient is dh (workspace scratch, which the unit's backward reads without writing
dz back), and the unit's backward takes the ReLU's mask from x (u > 0 where h > 0): no pass writes h and
none recomputes it.  The results are bit-identical to running the two steps (the same float32 operations
in the same order).  The schedule (core/memory_plan.py) uses this step only in planned passes
(``keep_intermediates=False``), when h is not kept.
"""
from __future__ import annotations

from ..cpu import bn_scale_relu as cpu
from ..layer import Layer
from ..proto import caffe_pb2 as pb
from .bn_scale_relu import BatchNormScaleReLU
from .convolution import ConvolutionLayer


class UnitConvolution(Layer):
    """The fused unit ``unit`` then ``conv`` (their layers' blobs are used, not copied)."""

    type = "BatchNorm+Scale+ReLU+Convolution"
    saved_for_backward = ("statistics",)  # the unit's (mean, std): the weight gradient's prologue reads them

    def __init__(self, unit: BatchNormScaleReLU, conv: ConvolutionLayer):
        param = pb.LayerParameter(name=f"{unit.name}+{conv.name}", type=self.type, bottom=unit.param.bottom,
                                  top=conv.param.top, phase=unit.phase)
        super().__init__(param, device=conv.device, dtype=conv.dtype, net_dir=conv.net_dir)
        self.unit, self.conv = unit, conv
        self.needs_backward = unit.needs_backward or conv.needs_backward
        self.statistics = None

    def backward_inputs(self) -> tuple[int, ...]:
        return (0,)  # x: the weight gradient and the unit's backward read it

    def backward_outputs(self) -> tuple[int, ...]:
        return ()

    def drop_saved(self) -> None:
        super().drop_saved()
        self.unit.drop_saved()

    @property
    def applies(self) -> bool:
        """True when this step can run now: on the CPU, with a convolution that applies the unit as it reads its
        input (Winograd's, or a pointwise GEMM's)."""
        return not self.on_gpu and self.conv.accepts_prologue

    def _prologue(self, mean, std) -> tuple:
        gamma, beta = self.unit.gamma_beta()
        return mean, std, gamma, beta, self.unit.relu.negative_slope

    def reshape(self, bottoms, tops) -> None:
        self.unit.dims = self.unit.bn.gpu_dims(bottoms[0])
        self.conv.reshape(bottoms, tops)  # the unit's output has its input's shape

    def forward_cpu(self, bottoms, tops) -> None:
        mean, std = self.unit.statistics_cpu(bottoms[0].data)
        self.statistics = (mean, std) if self.needs_backward else None
        self.conv.forward_cpu(bottoms, tops, prologue=self._prologue(mean, std))

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        x = bottoms[0].data
        dh = self.conv.workspace.array("unit_dh", x.shape, self.dtype) if self.unit.needs_backward else None
        self.conv.gradients_cpu(x, tops[0].diff, dh, prologue=self._prologue(*self.statistics))
        if dh is not None:
            dx = self.unit.gradients(cpu, x, None, dh, propagate_down[0], keep_top=True)
            if dx is not None:
                bottoms[0].diff = dx
