"""Mixed regime (Kubaty et al. 2024): backbone first, then the whole multi-exit network jointly."""

import torch
import torch.nn.functional as F

from bench.train.method import all_parameters, register_method
from methods.disjoint import Disjoint


@register_method("mixed")
class Mixed(Disjoint):
    """Phase "backbone": blocks + the deepest head trained with CE of the deepest exit only (as `disjoint`).
    Phase "joint": every parameter trained with the equal-weight joint loss L = (1/K) Σ_k CE(z_k, y) (as `joint`).
    Source: Kubaty et al. 2024 ("How to Train Your Multi-Exit Model?", arXiv 2407.14320), which reports mixed
    as consistently better than joint and disjoint (methods.md §3.7); exit policy: max softmax.
    Ours: the epoch split (`backbone_fraction`) and the 1/K weighting (identical to our `joint`)."""

    defaults = {"backbone_fraction": 0.5}
    source = "Kubaty et al. 2024 arXiv 2407.14320 (mixed regime; gmum/Zero-Time-Waste `with_backbone`)"
    choices = {"backbone_fraction": "ours: share of the epochs for the backbone phase (0.5); rounded, each phase ≥ 1 "
                                    "epoch; with 1 epoch only the backbone phase runs",
               "loss": "joint phase: (1/K) Σ CE, the same loss as our `joint` method",
               "training": "each phase gets a fresh AdamW + cosine schedule (engine)"}

    second_phase = "joint"

    def second_phase_parameters(self, model, extra):
        return all_parameters(model, extra)

    def second_phase_losses(self, logits, targets):
        return torch.stack([F.cross_entropy(z, targets) for z in logits]) / len(logits)
