"""Multi-exit convolutional backbones: exit k is a classifier head after block k."""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError
from bench.registry import Registry

MODELS: Registry = Registry("model")
Shape = tuple  # (channels, height, width); in a model's input shape None means any size


def register_model(name: str, input_shape: Shape):
    """Register a model builder under `name` with the input shape (channels, height, width) it is built for;
    None in a position accepts any size there. Config validation and the cost tables read it."""
    if len(input_shape) != 3 or not all(d is None or (isinstance(d, int) and d >= 1) for d in input_shape):
        raise ValueError(f"model {name!r}: input_shape must be (channels, height, width) of ints >= 1 or None")

    def add(builder):
        builder.input_shape = tuple(input_shape)
        return MODELS.register(name)(builder)

    return add


def input_shape(name: str) -> Shape:
    return MODELS.get(name, where="train.<dataset>.model.name").input_shape


def accepts(name: str, shape: Shape) -> bool:
    """Whether model `name` is built for samples of shape (channels, height, width)."""
    want = input_shape(name)
    return len(shape) == len(want) and all(w is None or w == s for w, s in zip(want, shape))


def shape_text(shape: Shape) -> str:
    return "×".join("any" if d is None else str(d) for d in shape)


def check_input_shape(name: str, shape: Shape, where: str) -> None:
    """One-line BenchError naming `where` when model `name` is not built for samples of `shape`."""
    if not accepts(name, shape):
        fits = [m for m in MODELS.names() if accepts(m, shape)]
        raise BenchError(f"{where} = {name!r} is built for {shape_text(input_shape(name))} inputs, but the dataset's "
                         f"samples are {shape_text(shape)}; use a model that accepts them: {', '.join(fits) or 'none'}")


class MultiExitNet(nn.Module):
    """`forward(x)` returns every exit's logits (shallow → deep); `forward(x, upto=k)` runs blocks and
    heads 0..k only, which is exactly what an early-exit model evaluates before leaving at exit k."""

    def __init__(self, blocks: list[nn.Module], heads: list[nn.Module]):
        super().__init__()
        if len(blocks) != len(heads):
            raise ValueError("one head per block")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        last = self.num_exits - 1 if upto is None else upto
        logits = []
        for k in range(last + 1):
            x = self.blocks[k](x)
            logits.append(self.heads[k](x))
        return logits

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.blocks.parameters())


def he_bn_init(model: nn.Module) -> nn.Module:
    """The ResNet papers' initialisation, as both authors' ResNets do it: He normal (fan_out, ReLU) for every
    convolution, BatchNorm scale 1 and shift 0; linear layers keep PyTorch's default. Returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def head(c_in: int, hidden: int | None, num_classes: int) -> nn.Module:
    """Early heads: strided conv3×3 → BN → ReLU → global average pool → linear (the stride keeps a head
    cheap next to its block). hidden=None: pool → linear."""
    layers = conv_bn_relu(c_in, hidden, stride=2) if hidden else []
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden or c_in, num_classes))


def conv_multi_exit(in_channels: int, num_classes: int, widths: list[int], head_width: int, pool: list[bool],
                    convs_per_block: int = 1, spectral_stem: int | None = None) -> MultiExitNet:
    """Block k = [conv3×3-BN-ReLU] × convs_per_block (+ 2×2 max-pool); the first block may start with a 1×1
    spectral convolution (hyperspectral input). The last exit is pool → linear; earlier exits get a conv head."""
    blocks, c = [], in_channels
    for k, width in enumerate(widths):
        layers: list[nn.Module] = []
        if k == 0 and spectral_stem:
            layers += conv_bn_relu(c, spectral_stem, kernel=1)
            c = spectral_stem
        layers += conv_bn_relu(c, width)
        for _ in range(convs_per_block - 1):
            layers += conv_bn_relu(width, width)
        if pool[k]:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        c = width
    heads = [head(w, head_width if k < len(widths) - 1 else None, num_classes) for k, w in enumerate(widths)]
    return MultiExitNet(blocks, heads)


@register_model("fmnist_cnn", input_shape=(None, 28, 28))
def fmnist_cnn(in_channels: int, num_classes: int, widths: list[int] = (32, 64, 128), head_width: int = 64,
               convs_per_block: int = 1) -> MultiExitNet:
    """28×28 grey images: pooled blocks (28 → 14 → 7 → 3)."""
    return conv_multi_exit(in_channels, num_classes, list(widths), head_width, pool=[True] * len(widths),
                           convs_per_block=convs_per_block)


@register_model("spectral_spatial_cnn", input_shape=(None, None, None))
def spectral_spatial_cnn(in_channels: int, num_classes: int, widths: list[int] = (64, 96, 128),
                         head_width: int = 64, spectral_stem: int = 64, convs_per_block: int = 1) -> MultiExitNet:
    """Hyperspectral patches (bands × p × p): 1×1 spectral reduction, then 3×3 spatial blocks, no pooling
    (patches are only a few pixels wide)."""
    return conv_multi_exit(in_channels, num_classes, list(widths), head_width, pool=[False] * len(widths),
                           convs_per_block=convs_per_block, spectral_stem=spectral_stem)


@register_model("tiny_cnn", input_shape=(None, 8, 8))
def tiny_cnn(in_channels: int, num_classes: int, widths: list[int] = (8, 16, 16), head_width: int = 8) -> MultiExitNet:
    """8×8 synthetic images, for smoke runs and tests."""
    return conv_multi_exit(in_channels, num_classes, list(widths), head_width, pool=[True, True, False])


@register_model("tiny_mlp", input_shape=(None, 8, 8))
def tiny_mlp(in_channels: int, num_classes: int, widths: list[int] = (32, 32)) -> MultiExitNet:
    """8×8 synthetic images, flattened: block k is linear-ReLU, exit k a linear head after it (a second
    model for the tiny dataset, for studies and tests with several models per dataset)."""
    blocks, features = [], in_channels * 8 * 8
    for k, width in enumerate(widths):
        blocks.append(nn.Sequential(*([nn.Flatten()] if k == 0 else []), nn.Linear(features, width), nn.ReLU()))
        features = width
    return MultiExitNet(blocks, [nn.Linear(w, num_classes) for w in widths])


def build_model(name: str, in_channels: int, num_classes: int, params: dict) -> MultiExitNet:
    return MODELS.get(name, where="train.<dataset>.model.name")(in_channels, num_classes, **params)
