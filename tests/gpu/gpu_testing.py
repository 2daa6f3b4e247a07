"""Helpers shared by the GPU tests: host copies, the golden tolerance measure, and one list of layer
configurations used by both the GPU-vs-CPU parity tests and the GPU gradient checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from memnet_engine import Blob, create_layer
from memnet_engine.core.gradcheck import scaled_error
from memnet_engine.core.proto import caffe_pb2 as pb
from memnet_engine.core.prototxt import parse_text


def host(array) -> np.ndarray:
    """A NumPy copy of a host or device array."""
    return array.get() if hasattr(array, "get") else np.array(array)


def assert_close(ours, reference, tol: float, what: str = "") -> None:
    """The golden README's measure (``scaled_error``: a NaN or inf on either side fails) within ``tol``."""
    reference = host(reference)
    err = scaled_error(host(ours).reshape(reference.shape), reference)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def _normal(rs: np.random.Generator, shape) -> np.ndarray:
    return rs.standard_normal(shape)


def _distinct(rs: np.random.Generator, shape) -> np.ndarray:
    """Values at least 0.01 apart (no near-ties: a max keeps its winner under small perturbations)."""
    n = int(np.prod(shape))
    return (rs.permutation(n * 3)[:n] * 0.01 - n * 0.015).reshape(shape)


def _ties(rs: np.random.Generator, shape) -> np.ndarray:
    """Small integers: plenty of exact ties."""
    return rs.integers(-2, 3, shape).astype(np.float64)


def _batchnorm_stats(rs: np.random.Generator, shapes) -> list[np.ndarray]:
    mean_sum, var_sum, scale = shapes
    return [rs.standard_normal(mean_sum), np.abs(rs.standard_normal(var_sum)) + 0.5, np.full(scale, 2.5)]


@dataclass
class LayerCase:
    """One layer configuration: LayerParameter text, bottom shapes and how to fill them."""

    id: str
    prototxt: str
    bottoms: list[tuple[int, ...]]
    phase: int = pb.TRAIN
    in_place: bool = False
    data: Callable = _normal
    params: "Callable | None" = None  # (rng, param shapes) -> param arrays; default: normal
    gradcheck_kink: "tuple[float, float] | None" = None  # (kink, kink_range) for check_layer
    gradcheck: bool = True
    gradcheck_params: bool = True  # False: parameters that are not learned (BatchNorm statistics)

    def param(self) -> pb.LayerParameter:
        param = parse_text(self.prototxt, pb.LayerParameter(), self.id)
        param.phase = self.phase
        return param


def conv(case_id: str, options: str, bottom, bias: bool = True) -> LayerCase:
    text = (f'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ {options} '
            f'bias_term: {"true" if bias else "false"} }}')
    return LayerCase(case_id, text, [bottom])


BN = 'name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
LAYER_CASES: list[LayerCase] = [
    conv("conv3x3_pad1_batch2", "num_output: 4 kernel_size: 3 pad: 1", (2, 3, 6, 5)),
    conv("conv3x3_pad1_single_image", "num_output: 4 kernel_size: 3 pad: 1", (1, 3, 6, 5)),
    conv("conv_stride_group_dilation", "num_output: 4 kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2",
         (2, 4, 9, 8)),
    conv("conv_rect_kernel_stride", "num_output: 3 kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
         (3, 2, 6, 7), bias=False),
    conv("conv1x1_single_image", "num_output: 5 kernel_size: 1", (1, 6, 4, 3)),
    conv("conv1x1_batch3", "num_output: 5 kernel_size: 1", (3, 6, 4, 3)),
    conv("conv1x1_group2_nobias", "num_output: 4 kernel_size: 1 group: 2", (2, 6, 3, 3), bias=False),
    conv("conv1x1_stride2_uses_im2col", "num_output: 2 kernel_size: 1 stride: 2", (2, 3, 5, 5)),
    LayerCase("bn_batch_stats", BN + "batch_norm_param { moving_average_fraction: 0.9 eps: 1e-4 }", [(3, 4, 5, 2)],
              params=_batchnorm_stats),
    LayerCase("bn_batch_stats_2d_inplace", 'name: "bn" type: "BatchNorm" bottom: "x" top: "x"', [(6, 3)],
              in_place=True, params=_batchnorm_stats),
    LayerCase("bn_global_stats_test", BN, [(2, 3, 4, 4)], phase=pb.TEST, params=_batchnorm_stats,
              gradcheck_params=False),
    LayerCase("bn_global_stats_forced_in_train", BN + "batch_norm_param { use_global_stats: true }",
              [(2, 3, 3, 3)], params=_batchnorm_stats, gradcheck_params=False),
    LayerCase("scale_bias_axis1", 'name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true }',
              [(2, 3, 4, 3)]),
    LayerCase("scale_scalar_inplace",
              'name: "s" type: "Scale" bottom: "x" top: "x" scale_param { num_axes: 0 bias_term: true }',
              [(2, 3, 3, 2)], in_place=True),
    LayerCase("scale_axis2_num_axes_all",
              'name: "s" type: "Scale" bottom: "x" top: "y" scale_param { axis: 2 num_axes: -1 }', [(2, 3, 4, 2)]),
    LayerCase("scale_two_bottoms_bias",
              'name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param { bias_term: true }',
              [(2, 3, 4, 2), (3, 4)]),
    LayerCase("scale_two_bottoms_scalar", 'name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y"',
              [(2, 3, 2, 2), ()]),
    LayerCase("relu", 'name: "r" type: "ReLU" bottom: "x" top: "y"', [(2, 3, 4, 5)], gradcheck_kink=(0.0, 0.01)),
    LayerCase("relu_leaky_inplace", 'name: "r" type: "ReLU" bottom: "x" top: "x" relu_param { negative_slope: 0.1 }',
              [(2, 3, 4, 5)], in_place=True, gradcheck_kink=(0.0, 0.01)),
    LayerCase("eltwise_sum_coeff",
              'name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" '
              'eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }', [(2, 3, 4, 3)] * 3),
    LayerCase("eltwise_sum_plain", 'name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y"', [(2, 5, 3)] * 2),
    LayerCase("eltwise_prod_stable",
              'name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" '
              'eltwise_param { operation: PROD }',
              [(2, 3, 4)] * 3),
    LayerCase("eltwise_prod_quotient",
              'name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" '
              'eltwise_param { operation: PROD stable_prod_grad: false }', [(2, 3, 4)] * 3),
    LayerCase("eltwise_max_ties",
              'name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: MAX }',
              [(2, 3, 4, 5)] * 3, data=_ties, gradcheck=False),
    LayerCase("eltwise_max_distinct",
              'name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: MAX }',
              [(2, 3, 3)] * 3, data=_distinct),
    LayerCase("concat_channels",
              'name: "c" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "y"',
              [(2, 2, 3, 4), (2, 3, 3, 4), (2, 1, 3, 4)]),
    LayerCase("concat_height_legacy_dim", 'name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" '
              'concat_param { concat_dim: 2 }', [(2, 3, 2, 4), (2, 3, 3, 4)]),
    LayerCase("concat_last_axis", 'name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" concat_param { axis: -1 }',
              [(2, 3, 2), (2, 3, 5)]),
    LayerCase("concat_single_bottom", 'name: "c" type: "Concat" bottom: "a" top: "y"', [(2, 3, 2, 2)]),
    LayerCase("split_three", 'name: "s" type: "Split" bottom: "x" top: "a" top: "b" top: "c"', [(2, 3, 4)]),
    LayerCase("split_one", 'name: "s" type: "Split" bottom: "x" top: "a"', [(2, 3, 4)]),
    LayerCase("euclidean_loss", 'name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"',
              [(3, 2, 4, 3), (3, 24)]),
    LayerCase("euclidean_loss_weighted",
              'name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" loss_weight: 0.5',
              [(2, 1, 5, 4), (2, 1, 5, 4)]),
]


def setup_layer(case: LayerCase, device: str, dtype, xp, inputs: list[np.ndarray],
                params: "list[np.ndarray] | None" = None):
    """(layer, bottoms, tops) set up on ``device``; bottoms hold ``inputs``; params copied if given."""
    param = case.param()
    layer = create_layer(param, device=device, dtype=dtype)
    bottoms = [Blob(shape, dtype, device) for shape in case.bottoms]
    for blob, value in zip(bottoms, inputs):
        blob.data = xp.asarray(value.astype(dtype))
    tops = bottoms[:len(param.top)] if case.in_place else [Blob((), dtype, device) for _ in param.top]
    if params is not None:
        layer.blobs = []
        for value in params:
            blob = Blob(value.shape, dtype, device)
            blob.data = xp.asarray(value.astype(dtype))
            layer.blobs.append(blob)
    layer.setup(bottoms, tops)
    return layer, bottoms, tops


def case_inputs(case: LayerCase, seed: int) -> list[np.ndarray]:
    rs = np.random.default_rng(seed)
    return [np.asarray(case.data(rs, shape), np.float64) for shape in case.bottoms]


def case_params(case: LayerCase, shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rs = np.random.default_rng(seed + 1)
    if case.params is not None:
        return case.params(rs, shapes)
    return [rs.standard_normal(shape) for shape in shapes]
