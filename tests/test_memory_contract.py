"""The memory contract of core/layer.py: backward reads only what a layer declares.

For every layer configuration of the shared list, forward runs, then every bottom and top whose data
the layer does not declare (``backward_inputs`` / ``backward_outputs``) is released, so reading it
raises; backward must still give exactly the gradients of a run that kept everything, and forward
may keep no array outside ``saved_for_backward``.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpu.gpu_testing import LAYER_CASES, case_inputs, case_params, setup_layer

SEED = 5


def _layer(case):
    inputs = case_inputs(case, SEED)
    layer, _, _ = setup_layer(case, "cpu", np.float64, np, inputs)
    params = case_params(case, [blob.shape for blob in layer.blobs], SEED)
    return setup_layer(case, "cpu", np.float64, np, inputs, params)


def _gradients(case, release_undeclared: bool) -> list[np.ndarray]:
    layer, bottoms, tops = _layer(case)
    layer.forward(bottoms, tops)
    if release_undeclared:
        undeclared = [name for name, value in vars(layer).items()
                      if isinstance(value, np.ndarray) and name not in layer.saved_for_backward]
        assert not undeclared, f"{case.id}: forward kept {undeclared} without declaring them"
        kept = {id(bottoms[i]) for i in layer.backward_inputs()} | {id(tops[i]) for i in layer.backward_outputs()}
        for blob in bottoms + tops:
            if id(blob) not in kept:
                blob.release_data()
    rs = np.random.default_rng(SEED + 2)
    for top in tops:
        top.diff = rs.standard_normal(top.shape)
    layer.backward(tops, [True] * len(bottoms), bottoms)
    return [b.diff.copy() for b in bottoms] + [p.diff.copy() for p in layer.blobs]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[case.id for case in LAYER_CASES])
def test_backward_reads_only_what_the_layer_declares(case) -> None:
    kept_all = _gradients(case, release_undeclared=False)
    planned = _gradients(case, release_undeclared=True)
    assert len(planned) == len(kept_all)
    for ours, reference in zip(planned, kept_all):
        np.testing.assert_array_equal(ours, reference)


def test_declarations_are_narrower_than_the_default() -> None:
    """The contract is only useful if layers declare less than 'everything' where they can."""
    declared = {}
    for case in LAYER_CASES:
        layer, bottoms, tops = _layer(case)
        declared[case.id] = (layer.backward_inputs(), layer.backward_outputs())
    assert declared["conv3x3_pad1_batch2"] == ((0,), ())
    assert declared["bn_batch_stats"] == ((), ())
    assert declared["eltwise_sum_plain"] == ((), ()) and declared["concat_channels"] == ((), ())
    assert declared["scale_bias_axis1"] == ((0,), ()) and declared["scale_scalar_inplace"] == ((), ())
    assert declared["eltwise_prod_quotient"] == ((0, 1, 2), (0,))
    assert declared["euclidean_loss"] == ((), ())
