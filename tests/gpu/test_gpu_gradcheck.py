"""The gradient checker on every GPU layer configuration, in float64 (central differences)."""
from __future__ import annotations

import numpy as np
import pytest

from .gpu_testing import LAYER_CASES, LayerCase, case_inputs, case_params, setup_layer
from memnet_engine.core.gradcheck import check_layer

CASES = [c for c in LAYER_CASES if c.gradcheck]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gpu_gradients(gpu, case: LayerCase) -> None:
    inputs = case_inputs(case, seed=11)
    shapes = [b.shape for b in setup_layer(case, "cpu", np.float64, np, inputs)[0].blobs]
    layer, bottoms, tops = setup_layer(case, "gpu", np.float64, gpu, inputs, case_params(case, shapes, seed=11))
    kink, kink_range = case.gradcheck_kink or (0.0, -1.0)
    report = check_layer(layer, bottoms, tops, check_params=case.gradcheck_params, stepsize=1e-3, threshold=1e-4,
                         kink=kink, kink_range=kink_range)
    assert report.checked > 0
    report.assert_ok()
