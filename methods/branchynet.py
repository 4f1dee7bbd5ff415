"""BranchyNet (Teerapittayanon, McDanel, Kung, ICPR 2016; code kunglab/branchynet, Chainer)."""

import math

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, Phase, all_parameters, check_range, register_method
from methods.disjoint import backbone_and_final_head, final_exit_losses


def pretrain_epochs(epochs: int, fraction: float) -> int:
    """round-half-up(fraction × epochs), leaving ≥ 1 joint epoch; 0 when fraction is 0 or epochs < 2."""
    if fraction <= 0 or epochs < 2:
        return 0
    return min(epochs - 1, math.floor(fraction * epochs + 0.5))


@register_method("branchynet")
class BranchyNet(Method):
    """Weighted joint loss L = Σ_k w_k CE(z_k, y); a sample exits at the first exit whose softmax entropy
    is below the threshold. Default w = 1 for every exit, as in the authors' code (kunglab/branchynet
    `branchynet/links/links.py`: `Branch.weight` is fixed to 1.0); the weights the CGT paper used for its
    BranchyNet baseline are NOT FOUND. With w = 1 the loss is K × `joint`'s, and AdamW is invariant to
    that scale, so the two train identically: they differ in the exit policy only.

    `pretrain_fraction` > 0 is the authors' regime (their `experiment_*` scripts pre-train the main network,
    50 epochs, before the joint phase): a first phase "pretrain" of round(fraction × epochs) epochs trains the
    backbone and the deepest exit on the deepest exit's CE only (early exits frozen, their terms 0), then phase
    "joint" trains everything with the weighted loss. Default 0.0: joint from the start, so the default study's
    numbers stay those it was run with."""

    defaults = {"weights": [1.0], "label_smoothing": 0.0, "pretrain_fraction": 0.0}
    source = "Teerapittayanon et al. 2016 (BranchyNet), kunglab/branchynet"
    choices = {"weights": "1.0 per exit as in the authors' code; CGT paper's baseline weights NOT FOUND",
               "label_smoothing": "ours (0.0 = none)",
               "pretrain_fraction": "ours: 0.0 = joint from the start (the default study's regime, kept so its "
                                    "numbers do not change); the authors pre-train the main network first (50 "
                                    "epochs in their scripts), available as a fraction of the run's epochs, rounded "
                                    "half up, ≥ 1 joint epoch left; each phase a fresh AdamW + cosine (engine)"}
    exit_policy = "entropy"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        check_range(self, "pretrain_fraction", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        weights = self.params["weights"]
        if len(weights) == 1:
            weights = weights * num_exits
        if len(weights) != num_exits:
            raise BenchError(f"methods.branchynet.weights has {len(weights)} values; the model has {num_exits} exits")
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise BenchError(f"methods.branchynet.weights must be non-negative numbers, got {weights!r}; set "
                             f"methods.branchynet.weights to one value >= 0 per exit (or one for all)")
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def phases(self, epochs):
        first = pretrain_epochs(epochs, self.params["pretrain_fraction"])
        phases = [Phase("pretrain", first, backbone_and_final_head), Phase("joint", epochs - first, all_parameters)]
        return [p for p in phases if p.epochs > 0]

    def exit_losses(self, logits, targets, ctx):
        if ctx.phase == "pretrain":
            return final_exit_losses(logits, targets)
        ls = self.params["label_smoothing"]
        losses = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits])
        return losses * self.weights.to(losses.device)
