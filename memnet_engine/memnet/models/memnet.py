"""MemNet (Tai et al., ICCV 2017) as a Caffe NetParameter, named exactly as the original release.

Layout (every convolution is pre-activated: BatchNorm -> Scale -> ReLU -> Convolution)::

    data -> conv1 (FENet, B_0)
    block m = 1..M, input B_{m-1} (conv1 or conv_transition_{m-1}):
        recursion r = 1..R:  H_r = H_{r-1} + conv{m}_{r}_b(conv{m}_{r}_a(H_{r-1}))   (eltwise{m}_{r})
                             the R recursions share conv{m}_wa/_ba and conv{m}_wb/_bb
        concat{m} = [long-term: conv1, conv_transition_01..m-1] + [short-term: eltwise{m}_01..R]
        conv_transition_{m}  (1x1 gate unit, B_m)
    multi-supervised: for every m, conv_end_{m} (sharing Recon_w/Recon_b) -> HR_recovery_{m} = data + conv_end_{m},
        loss_{m} (train), weight_output_end_{m} (a learned scalar Scale); HR_recovery = sum of the weighted
        outputs; loss_{M+1} (train).
    basic: only the last block is reconstructed: conv_end_{M} (Recon_w/Recon_b) -> HR_recovery = data +
        conv_end_{M}; one loss named ``loss`` (train).  The original release ships no basic net; these names
        keep the multi-supervised ones so its reconstruction weights load by name.

Ablations of the paper's Sec. 5.1 (Table 1) change only what the gate unit concatenates:
    NL (no long-term connections): concat{m} = [eltwise{m}_01..R]  (B_0..B_{m-1} dropped);
    NS (no short-term connections): concat{m} = [conv1, conv_transition_01..m-1, eltwise{m}_R]  (the first
        R-1 recursions dropped; the last recursion still feeds the gate).
Blocks and recursions are numbered with two digits (``01``), the final loss without padding (``loss_7``),
as in the release.  Depth (convolutions on the longest input->output path) is 1 + M(2R+1) + 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ...core.proto import caffe_pb2 as pb

CONV_LR_MULTS = (1.0, 0.1)  # weights, biases: the release's lr_mult on every convolution


@dataclass(frozen=True)
class MemNetConfig:
    """What a MemNet is made of: M blocks of R recursions with C channels, and its variant."""

    blocks: int = 6
    recursions: int = 6
    channels: int = 64
    multi_supervised: bool = True
    long_term: bool = True
    short_term: bool = True

    def __post_init__(self) -> None:
        for field, value in (("blocks", self.blocks), ("recursions", self.recursions), ("channels", self.channels)):
            if value < 1:
                raise ValueError(f"MemNet needs at least one of each: {field} = {value}")

    @property
    def depth(self) -> int:
        """The paper's depth: conv1 + M blocks of (2R recursion convs + 1 gate) + the reconstruction conv."""
        return 1 + self.blocks * (2 * self.recursions + 1) + 1

    @property
    def default_name(self) -> str:
        """The release's naming, ``MemNet_M6R6_80C64``, plus ``_basic`` / ``_NL`` / ``_NS`` for variants."""
        name = f"MemNet_M{self.blocks}R{self.recursions}_{self.depth}C{self.channels}"
        if not self.multi_supervised:
            name += "_basic"
        if not self.long_term:
            name += "_NL"
        if not self.short_term:
            name += "_NS"
        return name


def memnet_train_net(config: MemNetConfig, *, source: str, batch_size: int, shuffle: bool = True,
                     name: "str | None" = None) -> pb.NetParameter:
    """The training net: HDF5Data (``data``, ``label``; TRAIN phase only, as in the release) from ``source``
    and EuclideanLoss losses."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    net = pb.NetParameter(name=name or config.default_name)
    data = net.layer.add(name="data", type="HDF5Data", top=["data", "label"])
    data.hdf5_data_param.source = source
    data.hdf5_data_param.batch_size = batch_size
    data.hdf5_data_param.shuffle = shuffle
    data.include.add(phase=pb.TRAIN)
    _add_body(net, config, with_losses=True)
    return net


def memnet_deploy_net(config: MemNetConfig, *, input_shape: Sequence[int] = (1, 1, 144, 144),
                      name: "str | None" = None) -> pb.NetParameter:
    """The inference net: legacy ``input: "data"`` + four ``input_dim`` (as the release's deploy files)."""
    if len(input_shape) != 4 or any(d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be four positive dimensions (N, C, H, W), got {tuple(input_shape)}")
    net = pb.NetParameter(name=name or config.default_name)
    net.input.append("data")
    net.input_dim.extend(int(d) for d in input_shape)
    _add_body(net, config, with_losses=False)
    return net


def _add_body(net: pb.NetParameter, config: MemNetConfig, with_losses: bool) -> None:
    c = config.channels
    _preact_conv(net, "conv1", "data", c, 3)
    long_term = ["conv1"]
    for m in range(1, config.blocks + 1):
        block_input = long_term[-1]
        short_term = _recursive_unit(net, m, block_input, config)
        if not config.short_term:
            short_term = short_term[-1:]
        gate_inputs = (long_term if config.long_term else []) + short_term
        concat = net.layer.add(name=f"concat{m:02d}", type="Concat", bottom=gate_inputs, top=[f"concat{m:02d}"])
        concat.concat_param.axis = 1
        long_term.append(_preact_conv(net, f"conv_transition_{m:02d}", concat.top[0], c, 1))
    transitions = long_term[1:]
    if config.multi_supervised:
        _multi_supervised_output(net, transitions, with_losses)
    else:
        end = _reconstruction(net, len(transitions), transitions[-1])
        _eltwise_sum(net, "HR_recovery", ["data", end])
        if with_losses:
            _euclidean_loss(net, "loss", "HR_recovery")


def _recursive_unit(net: pb.NetParameter, m: int, block_input: str, config: MemNetConfig) -> list[str]:
    """R residual recursions sharing one pair of convolutions; returns the eltwise outputs H_1..H_R."""
    outputs, state = [], block_input
    for r in range(1, config.recursions + 1):
        unit = f"{m:02d}_{r:02d}"
        a = _preact_conv(net, f"conv{unit}_a", state, config.channels, 3, shared=(f"conv{m:02d}_wa", f"conv{m:02d}_ba"))
        b = _preact_conv(net, f"conv{unit}_b", a, config.channels, 3, shared=(f"conv{m:02d}_wb", f"conv{m:02d}_bb"))
        state = _eltwise_sum(net, f"eltwise{unit}", [state, b])
        outputs.append(state)
    return outputs


def _multi_supervised_output(net: pb.NetParameter, transitions: list[str], with_losses: bool) -> None:
    weighted = []
    for m, transition in enumerate(transitions, start=1):
        end = _reconstruction(net, m, transition)
        recovery = _eltwise_sum(net, f"HR_recovery_{m:02d}", ["data", end])
        if with_losses:
            _euclidean_loss(net, f"loss_{m:02d}", recovery)
        scale = net.layer.add(name=f"weight_output_end_{m:02d}", type="Scale", bottom=[recovery],
                              top=[f"weight_output_end_{m:02d}"])
        scale.scale_param.bias_term = False
        weighted.append(scale.top[0])
    _eltwise_sum(net, "HR_recovery", weighted)
    if with_losses:
        _euclidean_loss(net, f"loss_{len(transitions) + 1}", "HR_recovery")


def _reconstruction(net: pb.NetParameter, m: int, bottom: str) -> str:
    """ReconNet for block ``m``: a 3x3 convolution to one channel with the shared Recon_w/Recon_b."""
    return _preact_conv(net, f"conv_end_{m:02d}", bottom, 1, 3, shared=("Recon_w", "Recon_b"))


def _preact_conv(net: pb.NetParameter, conv: str, bottom: str, num_output: int, kernel: int,
                 shared: "tuple[str, str] | None" = None) -> str:
    """bn_<conv> (BatchNorm, frozen params) -> scale_<conv> -> relu<...> (in place) -> <conv>; returns <conv>.

    The ReLU is named after the convolution with ``conv`` -> ``relu`` (relu1, relu01_01_a,
    relu_transition_01, relu_end_01), as in the release.
    """
    bn = f"bn_{conv}"
    norm = net.layer.add(name=bn, type="BatchNorm", bottom=[bottom], top=[bn])
    for _ in range(3):
        norm.param.add(lr_mult=0)
    scale = net.layer.add(name=f"scale_{conv}", type="Scale", bottom=[bn], top=[bn])
    scale.scale_param.bias_term = True
    net.layer.add(name="relu" + conv[len("conv"):], type="ReLU", bottom=[bn], top=[bn])
    layer = net.layer.add(name=conv, type="Convolution", bottom=[bn], top=[conv])
    for i, lr_mult in enumerate(CONV_LR_MULTS):
        spec = layer.param.add(lr_mult=lr_mult)
        if shared:
            spec.name = shared[i]
    p = layer.convolution_param
    p.num_output = num_output
    p.kernel_size.append(kernel)
    p.stride.append(1)
    p.pad.append(kernel // 2)
    p.weight_filler.type = "msra"
    p.bias_filler.type = "constant"
    p.bias_filler.value = 0
    return conv


def _eltwise_sum(net: pb.NetParameter, name: str, bottoms: list[str]) -> str:
    layer = net.layer.add(name=name, type="Eltwise", bottom=bottoms, top=[name])
    layer.eltwise_param.operation = pb.EltwiseParameter.SUM
    return name


def _euclidean_loss(net: pb.NetParameter, name: str, prediction: str) -> None:
    net.layer.add(name=name, type="EuclideanLoss", bottom=[prediction, "label"], top=[name], loss_weight=[1])
