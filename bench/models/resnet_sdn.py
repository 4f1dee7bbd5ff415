"""`resnet56_sdn`: SDN's CIFAR ResNet-56 with its internal classifiers (yigitcankaya/Shallow-Deep-Networks,
commit a55644624c9dc064d1372f6a486055edd94c9def: `architectures/SDNs/ResNet_SDN.py`, `aux_funcs.InternalClassifier`,
`network_architectures.create_resnet56`) as a MultiExitNet.

Their ResNet-56: a 3×3 stride-1 stem conv (16 channels) → BN → ReLU, then 3 stages of 9 basic residual units
(16/32/64 channels on 32/16/8-pixel maps; the first unit of stages 2 and 3 has stride 2 and a 1×1-conv + BN
shortcut), unit = conv3×3-BN-ReLU-conv3×3-BN, + shortcut, ReLU; final exit AvgPool2d(8) → flatten →
Linear(64 → classes). Internal classifiers (ICs) sit after units `add_ic` (their list for resnet56, commented
"15, 30, 45, 60, 75, 90 percent of GFLOPs"): the 4th and 8th unit of every stage, i.e. units 4, 8, 12, 16, 20,
24 of 27 (tests/test_resnets.py checks that these are the units whose cumulative backbone FLOPs are nearest
to those fractions). IC on a c×s×s map: mixed pooling `α·maxpool(x) + (1−α)·avgpool(x)` with kernel s/4 (a
learned scalar α, initialised U(0, 1) as theirs) to c×4×4, flatten, Linear(16c → classes); 7 exits.

A detail of their code kept exactly: an IC reads its unit's residual sum *before* the unit's final ReLU
(`BasicBlockWOutput.forward` returns `relu(fwd)` to the next unit but `output(fwd)` to the IC). So block k
(k < 6) ends with that pre-activation sum and block k+1 starts with the ReLU; the last block ends with it.
Initialisation as theirs (`init_weights=True`): Kaiming-normal (fan_out, relu) for every conv, BN weight 1 /
bias 0, PyTorch's default for the linears.

Differences, outside the forward computation: `width` (default 16, theirs) scales the channels (w/2w/4w) so
that tests and smoke runs can use a narrow copy; the stem takes `in_channels` (theirs: 3); `ic_after` (1-based
unit numbers, default theirs) can move the ICs. Their 64-pixel (Tiny ImageNet) variant with a stride-2 stem is
not built: the model is registered for 32×32 samples. tests/test_resnets.py compares parameters and per-exit
FLOPs with a copy of their code (tests/reference/sdn_resnet.py).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models.multi_exit import MultiExitNet, he_bn_init, register_model

SDN_IC_AFTER = (4, 8, 12, 16, 20, 24)  # their add_ic for resnet56, as 1-based unit numbers of 27


class ResidualUnit(nn.Module):
    """Their BasicBlockWOutput without the ReLU at the end: returns the residual sum (pre-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class InternalClassifier(nn.Module):
    """Their IC: α·maxpool + (1−α)·avgpool with kernel size//4 (when size >= 4), then a linear layer."""

    def __init__(self, channels: int, size: int, num_classes: int):
        super().__init__()
        kernel = size // 4 if size >= 4 else None
        self.pool = kernel is not None
        if self.pool:
            self.max_pool, self.avg_pool = nn.MaxPool2d(kernel), nn.AvgPool2d(kernel)
            self.alpha = nn.Parameter(torch.rand(1))
            size //= kernel
        self.linear = nn.Linear(channels * size * size, num_classes)

    def forward(self, x):
        if self.pool:
            x = self.alpha * self.max_pool(x) + (1 - self.alpha) * self.avg_pool(x)
        return self.linear(x.flatten(1))


@register_model("resnet56_sdn", input_shape=(None, 32, 32))
def resnet56_sdn(in_channels: int, num_classes: int, width: int = 16,
                 ic_after: list[int] = SDN_IC_AFTER) -> MultiExitNet:
    """SDN's CIFAR ResNet-56 with internal classifiers after the given residual units (7 exits by default)."""
    units_per_stage, total = 9, 27
    ic_after = list(ic_after)
    if ic_after != sorted(set(ic_after)) or not all(1 <= u < total for u in ic_after):
        raise ValueError(f"ic_after must be increasing unit numbers in 1..{total - 1}, got {ic_after}")
    units, sizes, c = [], [], width
    for s in range(3):
        for i in range(units_per_stage):
            stride = 2 if s > 0 and i == 0 else 1
            units.append(ResidualUnit(c, width * 2 ** s, stride))
            c = width * 2 ** s
            sizes.append((c, 32 // 2 ** s))
    stem = [nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    blocks, heads, start = [], [], 0
    for end in [*ic_after, total]:
        layers = stem if start == 0 else [nn.ReLU()]
        for u in range(start, end):
            layers += [units[u]] if u == end - 1 else [units[u], nn.ReLU()]
        if end == total:  # the final exit reads the activated output
            layers.append(nn.ReLU())
            heads.append(nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(c, num_classes)))
        else:
            heads.append(InternalClassifier(*sizes[end - 1], num_classes))
        blocks.append(nn.Sequential(*layers))
        start = end
    return he_bn_init(MultiExitNet(blocks, heads))
