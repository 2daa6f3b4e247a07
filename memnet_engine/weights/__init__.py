"""Demo weights shipped inside the package: small MemNets trained by this engine on a CPU.

``memnet-restore`` and ``memnet-evaluate`` use them when no ``--model`` / ``--weights`` is given.
How each was trained (the exact commands) and what it scores is in README.md ("Demo weights").
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.errors import MemnetError

FOLDER = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class DemoModel:
    """A shipped deploy net and its weights for one task."""

    task: str
    deploy: str
    weights: str
    summary: str

    @property
    def deploy_path(self) -> str:
        return os.path.join(FOLDER, self.deploy)

    @property
    def weights_path(self) -> str:
        return os.path.join(FOLDER, self.weights)


DEMO_MODELS = {
    "sr": DemoModel("sr", "memnet_sr_demo_deploy.prototxt", "memnet_sr_demo.caffemodel",
                    "the shipped SR demo weights (MemNet M2R2 C32 basic, trained by this engine on a CPU for "
                    "x2/x3/x4; README: Demo weights)"),
}


def demo_model(task: str) -> DemoModel:
    """The shipped model for ``task``; a clear error if there is none (or the package lacks its files)."""
    model = DEMO_MODELS.get(task)
    if model is None:
        shipped = ", ".join(sorted(DEMO_MODELS))
        raise MemnetError(f"no demo weights are shipped for task '{task}' (only for: {shipped}); give --model and "
                          "--weights")
    for path in (model.deploy_path, model.weights_path):
        if not os.path.isfile(path):
            raise MemnetError(f"the demo weights file {path} is missing from this installation; give --model and "
                              "--weights")
    return model


def model_and_weights(task: str, model: "str | None", weights: "str | None") -> tuple[str, str, "str | None"]:
    """(deploy net, weights, note): what the user gave, or the shipped demo model when neither is given.

    The note (None when the user's files are used) says which shipped files are used.
    """
    if model and weights:
        return model, weights, None
    if model or weights:
        raise MemnetError("give both --model (deploy .prototxt) and --weights (.caffemodel), or neither to use "
                          "the shipped demo weights")
    demo = demo_model(task)
    return demo.deploy_path, demo.weights_path, f"using {demo.summary}: {demo.weights_path}"
