"""Cascade Optimization (CO), a CGT baseline that no source we could read defines: OUR READING (methods.md §1.8)."""

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, Phase, register_method


def stages(num_exits: int, epochs: int) -> list[tuple[range, int]]:
    """min(epochs, K) stages of contiguous exits with their epochs (as equal as integers allow, ≥ 1 each)."""
    n = min(epochs, num_exits)
    return [(range(num_exits * j // n, num_exits * (j + 1) // n), epochs * (j + 1) // n - epochs * j // n)
            for j in range(n)]


def reaches(logits, k: int, tau: float) -> torch.Tensor:
    """Samples that reach exit k: max softmax < tau at every earlier exit (no gradient; all samples at exit 0)."""
    with torch.no_grad():
        mask = torch.ones(len(logits[0]), dtype=torch.bool, device=logits[0].device)
        for z in logits[:k]:
            mask &= z.softmax(-1).amax(-1) < tau
    return mask


@register_method("cascade_opt")
class CascadeOpt(Method):
    """OUR READING, an assumption: CO is NOT FOUND in any source. Stage-wise (greedy) training, one stage per
    exit: stage k trains block k + head k with every earlier block and head frozen, on the loss
    L_k = (1/B) Σ_i 1[i reaches k] CE(z_k,i, y_i), where sample i reaches exit k when the max softmax of every
    earlier exit (this forward pass, no gradient) is below `tau`; exit 0 sees every sample. Other exits' terms
    are exactly 0. With fewer epochs than exits, consecutive exits share a stage (phase "exit{a}-{b}").
    Exit policy: max softmax (the confidence rule the masks mimic)."""

    defaults = {"tau": 0.9}
    source = "NOT FOUND (CGT, Mokssit et al. arXiv 2509.17885, names the baseline only); methods.md §1.8 suggestion"
    choices = {"tau": "ours: training-time confidence threshold 0.9 (the evaluation threshold is tuned separately)",
               "training": "our reading: one stage per exit, epochs split equally (earlier stages get the shorter "
                           "share); stage k trains block k + head k, earlier ones stay frozen (their BatchNorm running statistics still update: the engine trains in train "
                           "mode); fresh AdamW per stage",
               "loss": "our reading: masked CE summed over the samples that reach exit k under max-softmax ≥ tau at "
                       "every earlier exit (cumulative, as the cascade routes; confidences from the train-mode forward pass), "
                       "divided by the full batch size",
               "policy": "max_softmax"}

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        if not 0.0 < self.params["tau"] <= 1.0:
            raise BenchError(f"methods.cascade_opt.tau must be in (0, 1], got {self.params['tau']}")

    def phases(self, epochs):
        def trainable(exits):
            return lambda model, extra: [p for k in exits for m in (model.blocks[k], model.heads[k]) for p in m.parameters()]

        return [Phase(f"exit{exits[0]}" + (f"-{exits[-1]}" if len(exits) > 1 else ""), n, trainable(exits))
                for exits, n in stages(self.num_exits, epochs)]

    def exit_losses(self, logits, targets, ctx):
        first, _, last = ctx.phase.removeprefix("exit").partition("-")
        active = range(int(first), int(last or first) + 1)
        terms = []
        for k, z in enumerate(logits):
            if k in active:
                ce = F.cross_entropy(z, targets, reduction="none")
                terms.append(torch.where(reaches(logits, k, self.params["tau"]), ce, 0.0).sum() / len(targets))
            else:
                terms.append(0.0 * z.sum())
        return torch.stack(terms)
