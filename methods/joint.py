"""Joint training with equal-weight deep supervision."""

import torch
import torch.nn.functional as F

from bench.train.method import Method, register_method


@register_method("joint")
class Joint(Method):
    """L = (1/K) Σ_k CE(z_k, y): every exit trained on every sample with equal weight, backbone and heads
    together from scratch (gmum/Zero-Time-Waste `ztw_cv/methods/early_exit.py`, `with_backbone=True`;
    Kubaty et al. 2024 "joint" regime). Exit policy: max-softmax threshold."""

    defaults = {"label_smoothing": 0.0}
    source = "deep supervision as in gmum/Zero-Time-Waste ztw_cv (joint regime); arXiv 2407.14320"
    choices = {"label_smoothing": "ours (0.0 = none)"}

    def exit_losses(self, logits, targets, ctx):
        ls = self.params["label_smoothing"]
        return torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits]) / len(logits)
