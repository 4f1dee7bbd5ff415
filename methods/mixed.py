"""Mixed regime (Kubaty et al. 2024): backbone first, then the whole multi-exit network jointly."""

import torch
import torch.nn.functional as F

from bench.train.method import Method, Phase, all_parameters, register_method
from methods.disjoint import backbone_and_final_head, final_exit_losses, split_epochs


@register_method("mixed")
class Mixed(Method):
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

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        split_epochs(2, self.params["backbone_fraction"], f"methods.{self.name}.backbone_fraction")

    def phases(self, epochs):
        first, second = split_epochs(epochs, self.params["backbone_fraction"], f"methods.{self.name}.backbone_fraction")
        phases = [Phase("backbone", first, backbone_and_final_head), Phase("joint", second, all_parameters)]
        return [p for p in phases if p.epochs > 0]

    def exit_losses(self, logits, targets, ctx):
        if ctx.phase == "backbone":
            return final_exit_losses(logits, targets)
        return torch.stack([F.cross_entropy(z, targets) for z in logits]) / len(logits)
