"""Cascade-aware training (Wang et al., arXiv 2406.00060, 2024), adapted from a two-LM cascade to early exits."""

import torch
import torch.nn.functional as F

from bench.train.method import Method, check_range, register_method


@register_method("cascade_aware")
class CascadeAware(Method):
    """INFERRED sample-level adaptation of CAT's token-level cascade-aware loss (the paper's exact weighting is NOT
    FOUND). Each shallow exit k < K plays the "small model", the deepest exit the "large model". Rule, with
    correctness = argmax of the current batch's logits == label, computed without gradient:
        w_ik = downweight     if exit k is wrong and the deepest exit is right (only the deeper model gets it right:
                              the cascade should defer it, so exit k spends little capacity on it)
        w_ik = neither_weight if exit k and the deepest exit are both wrong
        w_ik = 1              if exit k is right.
    The deepest exit always has w = 1. Term k = (1/K)·mean_i w_ik·CE(z_ik, y_i) (mean over the whole batch, not Σw,
    so down-weighting does not re-inflate the rest; 1/K so that downweight = neither_weight = 1 is `joint`).
    Defaults (ours): downweight 0.1; neither_weight 1.0 (every sample is "neither" at initialisation, so a lower
    value would slow the shallow exits' start; the spec's "drop/down-weight neither too" is neither_weight = downweight).
    The "large model" is the deepest exit, not any deeper one. Exit policy: max softmax threshold."""

    defaults = {"downweight": 0.1, "neither_weight": 1.0, "label_smoothing": 0.0}
    source = "INFERRED adaptation of Wang et al. 2024, Cascade-Aware Training of Language Models (arXiv 2406.00060)"
    choices = {"downweight": "INFERRED; ours 0.1: weight of samples a shallow exit misses but the deepest gets right",
               "neither_weight": "INFERRED; ours 1.0: weight of samples both the shallow and the deepest exit miss",
               "loss": "INFERRED: per-sample weights from current-batch argmax correctness, no gradient; reference = "
                       "deepest exit; deepest exit weight 1; batch-mean normalisation; 1/K scaling as joint",
               "label_smoothing": "ours (0.0 = none)"}
    exit_policy = "max_softmax"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        check_range(self, "downweight", lambda v: v >= 0, ">= 0")
        check_range(self, "neither_weight", lambda v: v >= 0, ">= 0")

    def sample_weights(self, logits, targets) -> torch.Tensor:
        """w [K, B] under the rule above."""
        with torch.no_grad():
            correct = torch.stack([z.argmax(dim=-1) == targets for z in logits])
            deep = correct[-1].expand_as(correct)
            w = torch.ones(correct.shape, device=targets.device)
            w[~correct & deep] = self.params["downweight"]
            w[~correct & ~deep] = self.params["neither_weight"]
            w[-1] = 1.0
        return w

    def exit_losses(self, logits, targets, ctx):
        ls, w = self.params["label_smoothing"], self.sample_weights(logits, targets)
        per_sample = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls, reduction="none") for z in logits])
        return (w.to(per_sample) * per_sample).mean(dim=1) / len(logits)
