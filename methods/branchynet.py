"""BranchyNet (Teerapittayanon, McDanel, Kung, ICPR 2016; code kunglab/branchynet, Chainer)."""

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, register_method


@register_method("branchynet")
class BranchyNet(Method):
    """Weighted joint loss L = Σ_k w_k CE(z_k, y); a sample exits at the first exit whose softmax entropy
    is below the threshold. The weights the CGT paper used for its BranchyNet baseline are NOT FOUND:
    our default is w = 1 for every exit (set `weights` to one number per exit to change it)."""

    defaults = {"weights": [1.0], "label_smoothing": 0.0}
    source = "Teerapittayanon et al. 2016 (BranchyNet), kunglab/branchynet"
    choices = {"weights": "ours: 1.0 per exit (paper's weights for these backbones NOT FOUND)",
               "label_smoothing": "ours (0.0 = none)"}
    exit_policy = "entropy"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        weights = self.params["weights"]
        if len(weights) == 1:
            weights = weights * num_exits
        if len(weights) != num_exits:
            raise BenchError(f"methods.branchynet.weights has {len(weights)} values; the model has {num_exits} exits")
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def exit_losses(self, logits, targets, ctx):
        ls = self.params["label_smoothing"]
        losses = torch.stack([F.cross_entropy(z, targets, label_smoothing=ls) for z in logits])
        return losses * self.weights.to(losses.device)
