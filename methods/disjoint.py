"""Disjoint ("IC-only") training: backbone first, then frozen; the early heads trained alone."""

import math

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, Phase, register_method


def split_epochs(epochs: int, fraction: float, where: str) -> list[int]:
    """Epochs of a two-phase run: round(fraction·epochs) (halves up), clamped so both phases get ≥ 1 epoch
    when epochs ≥ 2; with one epoch the first phase takes it and the second is dropped."""
    if not 0.0 < fraction < 1.0:
        raise BenchError(f"{where} must be in (0, 1), got {fraction}")
    if epochs < 2:
        return [epochs, 0]
    first = min(max(math.floor(fraction * epochs + 0.5), 1), epochs - 1)
    return [first, epochs - first]


def backbone_and_final_head(model, extra):
    return model.backbone_parameters() + list(model.heads[-1].parameters())


def early_heads(model, extra):
    return [p for head in model.heads[:-1] for p in head.parameters()]


def final_exit_losses(logits, targets):
    """CE of the deepest exit; every earlier term is exactly 0 (0·Σz keeps the per-exit vector shape)."""
    return torch.stack([0.0 * z.sum() for z in logits[:-1]] + [F.cross_entropy(logits[-1], targets)])


@register_method("disjoint")
class Disjoint(Method):
    """Phase "backbone": blocks + the deepest head trained with CE of the deepest exit only. Phase "heads":
    blocks and the deepest head frozen, heads 0..K−2 trained with L = Σ_{k<K−1} CE(z_k, y) (weight 1 per exit:
    EE-Tuning's `--exit-layer-weight` default, SDN's IC-only Σ CE). The "disjoint" regime of Kubaty et al.
    2024 / the IC-only recipe of SDN and EE-Tuning (methods.md §3.5, §3.7); exit policy: max softmax.
    Ours: the epoch split (`backbone_fraction`), and that the backbone is trained inside the same run."""

    defaults = {"backbone_fraction": 0.5}
    source = ("Kubaty et al. 2024 arXiv 2407.14320 (disjoint regime; gmum/Zero-Time-Waste `with_backbone=False`); "
              "EE-Tuning, Pan et al. 2024 arXiv 2402.00518 (pan-x-c/EE-LLM); SDN IC-only (Kaya et al. 2019)")
    choices = {"backbone_fraction": "ours: share of the epochs for the backbone phase (0.5); rounded, each phase ≥ 1 "
                                    "epoch; with 1 epoch only the backbone phase runs",
               "loss": "heads phase: Σ CE with weight 1 per early exit (EE-Tuning default weight, SDN IC-only)",
               "training": "each phase gets a fresh AdamW + cosine schedule (engine); frozen blocks keep their "
                           "BatchNorm running statistics (engine)"}
    second_phase = "heads"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        split_epochs(2, self.params["backbone_fraction"], f"methods.{self.name}.backbone_fraction")

    def second_phase_parameters(self, model, extra):
        return early_heads(model, extra)

    def second_phase_losses(self, logits, targets):
        return torch.stack([F.cross_entropy(z, targets) for z in logits[:-1]] + [0.0 * logits[-1].sum()])

    def phases(self, epochs):
        first, second = split_epochs(epochs, self.params["backbone_fraction"], f"methods.{self.name}.backbone_fraction")
        phases = [Phase("backbone", first, backbone_and_final_head),
                  Phase(self.second_phase, second, self.second_phase_parameters)]
        return [p for p in phases if p.epochs > 0]

    def exit_losses(self, logits, targets, ctx):
        if ctx.phase == "backbone":
            return final_exit_losses(logits, targets)
        return self.second_phase_losses(logits, targets)
