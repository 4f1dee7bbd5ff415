"""`resnet18_scan`: the CGT authors' CIFAR-100 network (gunki-geek/CG-Training `resnet.py`, `resnet18`, commit
4c94fdbbc5e7955d61aace0ee0f9a7c027e469ae) as a MultiExitNet.

The authors' ResNet-18 (BasicBlock, [2, 2, 2, 2], stages of 64/128/256/512 channels): a 3×3 stride-1 stem
conv → BN → ReLU (their `maxpool` module is built but never called in `forward`), then layer1..layer4 (strides
1, 2, 2, 2; a 1×1-conv + BN shortcut where the shape changes). Exits, shallow → deep (their `forward` returns
them deep → shallow, `[out4, out3, out2, out1]`; their training scripts reverse that list):
- exit k < 3 reads stage k+1's output x: `attention_k(x) * x` (attention = SepConv(c → c, stride 2) → BN →
  ReLU → bilinear 2× upsample → sigmoid), then `scala_k` = one SepConv per remaining stage (each stride 2,
  channels doubling up to 512) → AvgPool2d(4) → flatten → Linear(512 → classes);
- exit 3: AvgPool2d(4) of layer4's 4×4 output → flatten → Linear(512 → classes).
SepConv = depthwise 3×3 (stride 2) → 1×1 → BN → ReLU → depthwise 3×3 → 1×1 → BN → ReLU, convolutions without
bias. Initialisation as theirs: Kaiming-normal (fan_out, relu) for every conv, BN weight 1 / bias 0, PyTorch's
default for the linears.

As a MultiExitNet, block 0 = stem + layer1 and block k = layer(k+1); head k = attention_k (k < 3) + scala_k +
fc_k. The attention feeds only its exit (their backbone continues from the un-weighted x), so it belongs to
the head, and exit k computes exactly what their forward computes for it.

Differences, all outside the forward computation: `width` (default 64, theirs) scales every channel count
(stages w/2w/4w/8w, heads as theirs in units of w) so that tests and smoke runs can use a narrow copy; the
stem takes `in_channels` (theirs: 3). The heads' AvgPool2d(4) assumes 32×32 inputs, as theirs does, so the
model is registered for 32×32 samples only. tests/test_resnets.py compares parameters and per-exit FLOPs with
a copy of their code (tests/reference/cgt_resnet.py).
"""

from __future__ import annotations

from torch import nn

from bench.models.multi_exit import MultiExitNet, he_bn_init, register_model


def sep_conv(c_in: int, c_out: int) -> nn.Sequential:
    """The authors' `SepConv` (kernel 3, stride 2, padding 1, affine BN)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_in, 1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_in, 3, stride=1, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


class BasicBlock(nn.Module):
    """torchvision's / the authors' BasicBlock: conv3×3-BN-ReLU-conv3×3-BN + shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), *[BasicBlock(c_out, c_out) for _ in range(blocks - 1)])


class AttentionExit(nn.Module):
    """Exit k < 3: `fc(flatten(scala(attention(x) * x)))`."""

    def __init__(self, channels: int, depth: int, num_classes: int):
        super().__init__()
        self.attention = nn.Sequential(sep_conv(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(),
                                       nn.Upsample(scale_factor=2, mode="bilinear"), nn.Sigmoid())
        self.scala = nn.Sequential(*[sep_conv(channels * 2 ** i, channels * 2 ** (i + 1)) for i in range(depth)],
                                   nn.AvgPool2d(4, 4))
        self.fc = nn.Linear(channels * 2 ** depth, num_classes)

    def forward(self, x):
        return self.fc(self.scala(self.attention(x) * x).flatten(1))


@register_model("resnet18_scan", input_shape=(None, 32, 32))
def resnet18_scan(in_channels: int, num_classes: int, width: int = 64) -> MultiExitNet:
    """The CGT authors' CIFAR ResNet-18 with three SCAN-style attention exits and the final exit (4 exits)."""
    w = width
    blocks = [nn.Sequential(nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(w),
                            nn.ReLU(inplace=True), stage(w, w, 2, 1)),
              stage(w, 2 * w, 2, 2), stage(2 * w, 4 * w, 2, 2), stage(4 * w, 8 * w, 2, 2)]
    heads = [AttentionExit(w * 2 ** k, 3 - k, num_classes) for k in range(3)]
    heads.append(nn.Sequential(nn.AvgPool2d(4, 4), nn.Flatten(), nn.Linear(8 * w, num_classes)))
    return he_bn_init(MultiExitNet(blocks, heads))
