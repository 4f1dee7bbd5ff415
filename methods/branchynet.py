"""BranchyNet (Teerapittayanon, McDanel, Kung, ICPR 2016; code kunglab/branchynet, Chainer)."""

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, register_method


@register_method("branchynet")
class BranchyNet(Method):
    """Weighted joint loss L = Σ_k w_k CE(z_k, y); a sample exits at the first exit whose softmax entropy
    is below the threshold. Default w = 1 for every exit, as in the authors' code (kunglab/branchynet
    `branchynet/links/links.py`: `Branch.weight` is fixed to 1.0); the weights the CGT paper used for its
    BranchyNet baseline are NOT FOUND. With w = 1 the loss is K × `joint`'s, and AdamW is invariant to
    that scale, so the two train identically: they differ in the exit policy only."""

    defaults = {"weights": [1.0], "label_smoothing": 0.0}
    source = "Teerapittayanon et al. 2016 (BranchyNet), kunglab/branchynet"
    choices = {"weights": "1.0 per exit as in the authors' code; CGT paper's baseline weights NOT FOUND",
               "label_smoothing": "ours (0.0 = none)"}
    exit_policy = "entropy"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        weights = self.params["weights"]
        if len(weights) == 1:
            weights = weights * num_exits
        if len(weights) != num_exits:
            raise BenchError(f"methods.branchynet.weights has {len(weights)} values; the model has {num_exits} exits")
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise BenchError(f"methods.branchynet.weights must be non-negative numbers, got {weights!r}; set "
                             f"methods.branchynet.weights to one value >= 0 per exit (or one for all)")
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def exit_losses(self, logits, targets, ctx):
        ls = self.params["label_smoothing"]
        losses = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits])
        return losses * self.weights.to(losses.device)
