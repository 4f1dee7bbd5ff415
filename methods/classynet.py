"""ClassyNet, class-aware early exits (VCU music lab project page; loss and CGT's configuration NOT FOUND)."""

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.train.method import Method, register_method


class PriorityClasses(nn.Module):
    """classes[k, c]: exit k answers for class c (a buffer, so checkpoints and model.pt keep it). The deepest
    exit's row stays all-true."""

    def __init__(self, num_exits: int, num_classes: int):
        super().__init__()
        self.register_buffer("classes", torch.ones(num_exits, num_classes, dtype=torch.bool))


@register_method("classynet")
class ClassyNet(Method):
    """INFERRED reading of ClassyNet ("each exit returns only selected (priority) classes; other classes continue
    deeper", project page abstract; methods.md §1.8). Shallow exit k is trained with CE only on the samples whose
    label is in its priority set (the others carry exactly zero gradient), the deepest exit on every sample:
    L_k = (1/K)(1/B) Σ_i 1[y_i ∈ S_k] CE(z_k,i, y_i), so with every set full the loss is `joint`'s. All sets start
    with every class; after each epoch S_k = {c : validation accuracy of exit k on class c ≥ class_acc_threshold}
    (a class without validation samples keeps its membership). Exit policy `class_aware` (the paper's rule: an
    exit answers only for its priority classes): exit k may take a sample only when its prediction is in S_k and
    its max softmax reaches the threshold; `eval_outputs` saves priority_mask[k, i] = 1[argmax z_k,i ∈ S_k]."""

    defaults = {"class_acc_threshold": 0.9}
    source = ("ClassyNet, 'Class-Aware Early Exit Neural Networks for Edge Devices' (Ayyat, Nadeem, Krawczyk, IEEE "
              "Internet of Things Journal 11(9), 2024, doi 10.1109/JIOT.2023.3344120; music.lab.vcu.edu/projects/"
              "classynet); loss and CGT's configuration NOT FOUND")
    exit_policy = "class_aware"
    choices = {"class_acc_threshold": "ours (0.9): a class joins exit k's priority set when exit k's validation "
                                      "accuracy on it reaches this",
               "loss": "INFERRED: shallow exits' CE masked to their priority classes, normalised by the full batch, "
                       "weights 1/K as `joint`; deepest exit on all samples",
               "training": "INFERRED: sets start full and are refitted from validation accuracy after every epoch "
                           "(per-class recall). Known weakness of this reading: a shallow exit never gets gradient "
                           "from other classes' samples, so it learns to answer one of its priority classes for "
                           "samples of any class; recall stays high while the exit's answers in its set are often "
                           "wrong, and the class-aware policy lets those answers out early",
               "policy": "class_aware: an exit takes a sample only when its prediction is one of the exit's priority "
                         "classes and its max softmax reaches the exit's threshold (thresholds tuned like every "
                         "method's); the confidence rule (max softmax) is ours, how CGT configured ClassyNet's "
                         "exits NOT FOUND"}

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        if not 0.0 <= self.params["class_acc_threshold"] <= 1.0:
            raise BenchError(f"methods.classynet.class_acc_threshold must be in [0, 1], "
                             f"got {self.params['class_acc_threshold']}")
        self.priority_classes = [list(range(num_classes)) for _ in range(num_exits)]  # recorded in metadata

    def extra_modules(self):
        return PriorityClasses(self.num_exits, self.num_classes)

    def eval_outputs(self, extra, logits):
        """priority_mask [K, N]: whether each exit's prediction is one of that exit's priority classes."""
        return {"priority_mask": extra.classes.gather(1, logits.argmax(-1))}

    def exit_losses(self, logits, targets, ctx):
        priority = ctx.extra.classes[:, targets]  # [K, B]
        terms = [torch.where(priority[k], F.cross_entropy(z, targets, reduction="none"), 0.0).sum() / len(targets)
                 for k, z in enumerate(logits)]
        return torch.stack(terms) / len(logits)

    @torch.no_grad()
    def epoch_end(self, extra, val_logits, val_labels, ctx):
        correct = (val_logits.argmax(-1) == val_labels).float()  # [K, N]
        counts = torch.bincount(val_labels, minlength=self.num_classes)
        for k in range(self.num_exits - 1):
            hits = torch.bincount(val_labels, weights=correct[k], minlength=self.num_classes)
            accurate = hits / counts.clamp(min=1) >= self.params["class_acc_threshold"]
            updated = torch.where(counts > 0, accurate, extra.classes[k].cpu())
            extra.classes[k] = updated.to(extra.classes.device)
        self.priority_classes = [row.nonzero().flatten().tolist() for row in extra.classes.cpu()]

    def metadata(self):
        """Adds the final priority sets (also the `classes` buffer of model.pt's `extra`)."""
        return {**super().metadata(), "priority_classes": self.priority_classes}
