"""Depth of a layer graph: the most convolutions on any path from an input to an output."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from ...core.proto import caffe_pb2 as pb

if TYPE_CHECKING:
    from ...core.net import Net


def conv_depth(net: "Net | pb.NetParameter", counted: Sequence[str] = ("Convolution",)) -> int:
    """Convolutions (layers whose type is in ``counted``) on the longest path through ``net``.

    Works on a built :class:`~memnet_engine.Net` (splits included) or on a NetParameter, whose
    layers are in execution order; in-place layers simply carry their blob's count on.  For
    MemNet this is the paper's depth, 1 + M(2R+1) + 1 (80 for M6R6, 212 for M10R10).
    """
    if isinstance(net, pb.NetParameter):
        layers = [(lp.type, lp.bottom, lp.top) for lp in net.layer]
    else:
        layers = list(zip((layer.type for layer in net.layers), net.bottom_names, net.top_names))
    return _longest_path(layers, frozenset(counted))


def _longest_path(layers: Iterable[tuple[str, Sequence[str], Sequence[str]]], counted: frozenset[str]) -> int:
    depth: dict[str, int] = {}
    for layer_type, bottoms, tops in layers:
        reached = max((depth.get(name, 0) for name in bottoms), default=0) + (layer_type in counted)
        for name in tops:
            depth[name] = reached
    return max(depth.values(), default=0)
