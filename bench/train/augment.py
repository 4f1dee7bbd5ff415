"""Batched data augmentation in plain torch (no torchvision), driven by an explicit generator. The generator
is a CPU one on every device: the random draws are made on the CPU and moved to the batch's device, where the
batch is transformed (so a run draws the same augmentations on CPU and GPU, and CPU runs are unchanged)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")


@AUGMENTATIONS.register("none")
def no_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x


@AUGMENTATIONS.register("translate_flip")
def translate_flip(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (zero padding) and a random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)


@AUGMENTATIONS.register("crop_flip")
def crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The CIFAR standard: a random crop of the image's size from the image zero-padded by `padding` pixels on
    every side (torchvision's RandomCrop(32, padding=4)), then a random horizontal flip; the same operation as a
    translation by up to `padding` pixels."""
    return translate_flip(x, gen, max_shift=padding)


@AUGMENTATIONS.register("dihedral")
def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of the 8 symmetries of the square per sample (flips and transposition of a patch)."""
    n = x.shape[0]
    flips = (torch.rand(n, 3, generator=gen) < 0.5).to(x.device)
    x = torch.where(flips[:, 0].view(n, 1, 1, 1), x.flip(-1), x)
    x = torch.where(flips[:, 1].view(n, 1, 1, 1), x.flip(-2), x)
    return torch.where(flips[:, 2].view(n, 1, 1, 1), x.transpose(-1, -2), x)
