"""Input: tops whose data the user sets (also made from legacy net ``input:`` fields)."""
from __future__ import annotations

from ..errors import NetError
from ..layer import DataLayer, register


@register("Input")
class InputLayer(DataLayer):
    min_tops = 1

    def layer_setup(self, bottoms, tops) -> None:
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(tops)):
            raise NetError(f"layer '{self.name}': give one input shape, or one per top ({len(tops)})")
        for i, top in enumerate(tops):
            if shapes:
                shape = tuple(shapes[0 if len(shapes) == 1 else i].dim)
                if any(d < 0 for d in shape):
                    raise NetError(f"layer '{self.name}': input '{self.param.top[i]}' has a negative dimension "
                                   f"{shape}")
                top.reshape(shape)

    def reshape(self, bottoms, tops) -> None:
        """The user reshapes input blobs directly; nothing to do."""

    def forward_cpu(self, bottoms, tops) -> None:
        pass

    def forward_gpu(self, bottoms, tops) -> None:
        pass
