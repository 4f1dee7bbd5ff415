"""PABEE's weighted joint loss (Zhou et al., NeurIPS 2020; code JetRunner/PABEE)."""

import torch
import torch.nn.functional as F

from bench.train.method import Method, register_method


@register_method("pabee_weighted")
class PABEEWeighted(Method):
    """L = Σ_{j=1..K} j·CE(z_j, y) / Σ_j j: deeper exits weighted linearly more, as in the authors' code
    (JetRunner/PABEE `pabee/modeling_albert.py`, `total_loss += loss * (ix + 1)`, divided by the summed weights; the
    same loss trains BEEM, Div290/BEEM1). Term j is j·CE_j / Σ_j j. Exit policy: patience (exit once `patience`
    consecutive exits agree on the argmax). Our choice: label smoothing available, off by default."""

    defaults = {"label_smoothing": 0.0}
    source = "Zhou et al. 2020 (PABEE), JetRunner/PABEE pabee/modeling_albert.py"
    choices = {"label_smoothing": "ours (0.0 = none)",
               "loss": "exit j = 1..K counted over our exits (PABEE: one classifier per transformer layer)"}
    exit_policy = "patience"

    def exit_losses(self, logits, targets, ctx):
        ls = self.params["label_smoothing"]
        losses = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits])
        j = torch.arange(1, len(logits) + 1, dtype=losses.dtype, device=losses.device)
        return losses * j / j.sum()
