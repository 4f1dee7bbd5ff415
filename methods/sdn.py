"""SDN: Shallow-Deep Networks (Kaya, Hong, Dumitras, ICML 2019; code yigitcankaya/Shallow-Deep-Networks)."""

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, register_method


@register_method("sdn")
class SDN(Method):
    """SDN weighted objective L = Σ_{i<K} τ_i(t)·CE(z_i, y) + CE(z_K, y), τ_i(t) = min(C_i, 0.01 + t·C_i/T), as in
    the authors' `model_funcs.sdn_train` / `sdn_training_step` (from-scratch "SDN training"; the "IC-only" regime is not
    this method). t is 1-based, t = ctx.epoch + 1, because the authors loop `for epoch in range(1, epochs+1)`: τ_i is
    0.01 + C_i/T in the first epoch and reaches the cap C_i in the last. T = ctx.num_epochs (the whole run).
    Our choices: C_i = the exit's cumulative-FLOPs fraction `cost_fractions[i]` (INFERRED: SDN's C = 0.15..0.9 are
    its ICs' FLOP positions; ours sit where our backbone puts them), or `max_weights` (one value for all ICs, or one
    per IC); the deepest exit always has weight 1. Exit policy: first exit with max softmax ≥ q (`VGG_SDN.early_exit`)."""

    defaults = {"max_weights": [], "label_smoothing": 0.0}
    source = "Kaya et al. 2019 (SDN), yigitcankaya/Shallow-Deep-Networks model_funcs.py sdn_train"
    choices = {"max_weights": "INFERRED: empty = C_i = our exits' cumulative FLOP fractions (SDN: 0.15..0.9 = its IC "
                              "FLOP positions)",
               "training": "t = epoch + 1 (1-based, as the authors' epoch loop), T = all epochs of the run",
               "label_smoothing": "ours (0.0 = none)"}
    exit_policy = "max_softmax"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        weights = self.params["max_weights"]
        if len(weights) not in (0, 1, num_exits - 1) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights):
            raise BenchError(f"methods.sdn.max_weights must be [] or 1 or {num_exits - 1} non-negative numbers "
                             f"(one per early exit), got {weights!r}")

    def ic_weights(self, epoch: int, num_epochs: int) -> torch.Tensor:
        """τ_i(t) for the K-1 early exits at 0-based epoch `epoch` of `num_epochs`."""
        caps = self.params["max_weights"] or self.cost_fractions[:-1]
        caps = torch.tensor([float(c) for c in caps] * (self.num_exits - 1 if len(caps) == 1 else 1), dtype=torch.float64)
        return torch.minimum(caps, 0.01 + (epoch + 1) * caps / num_epochs).float()

    def exit_losses(self, logits, targets, ctx):
        ls = self.params["label_smoothing"]
        losses = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits])
        weights = torch.cat([self.ic_weights(ctx.epoch, ctx.num_epochs), torch.ones(1)]).to(losses)
        return losses * weights
