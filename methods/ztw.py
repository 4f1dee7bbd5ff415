"""ZTW — Zero Time Waste (Wołczyk et al., NeurIPS 2021; code gmum/Zero-Time-Waste, ztw_cv)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.train.method import Method, Phase, register_method

STAGES = ("backbone", "cascade", "ensemble")


def split_epochs(epochs: int, fractions: list[float]) -> list[int]:
    """Epochs per phase ∝ `fractions` (largest remainder, ties to the earlier phase), each phase ≥ 1 epoch
    when there are enough epochs; with fewer epochs than phases the later phases get 0."""
    if epochs < len(fractions):
        return [1] * epochs + [0] * (len(fractions) - epochs)
    exact = [f / sum(fractions) * epochs for f in fractions]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:epochs - sum(counts)]:
        counts[i] += 1
    while 0 in counts:  # take an epoch from the longest phase
        counts[max(range(len(counts)), key=lambda i: (counts[i], -i))] -= 1
        counts[counts.index(0)] = 1
    return counts


class GeometricEnsemble(nn.Module):
    """z̃_i = (1/(i+1)) Σ_{j≤i} exp(w_j)·log_softmax(z_j) + b (0-based i), as the authors'
    `GeometricWeightedEnsemble`: w ~ N(0, 0.01) of shape [i+1], b = 0 of shape [C]."""

    def __init__(self, num_members: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, size=(num_members,)))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, logprobs: torch.Tensor) -> torch.Tensor:
        """logprobs: [N, i+1, C] log-softmaxes of exits 0..i → [N, C]."""
        return (logprobs * self.weight.exp()[None, :, None]).mean(1) + self.bias


class ZTWModules(nn.Module):
    """What ZTW adds to the network, for `num_ics` = K−1 internal classifiers (the deepest exit is the
    backbone's own classifier and gets neither): IC i ≥ 1 has a LayerNorm and a bias-free Linear(C→C) on the
    previous IC's detached logits (`norms[i-1]`, `cascades[i-1]`); IC i has a geometric ensemble of ICs 0..i."""

    def __init__(self, num_ics: int, num_classes: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(num_classes) for _ in range(num_ics - 1))
        self.cascades = nn.ModuleList(nn.Linear(num_classes, num_classes, bias=False) for _ in range(num_ics - 1))
        self.ensembles = nn.ModuleList(GeometricEnsemble(i + 1, num_classes) for i in range(num_ics))


@register_method("ztw")
class ZTW(Method):
    """Zero Time Waste: cascading internal classifiers (ICs) and geometric ensembles, trained in three phases
    as the authors' code does (`ztw_cv/architectures/early_exits/ztw.py`, `heads.py`; methods.md §3.7).

    (1) Cascading ICs. The authors' cascading head is `fc(features ⊕ LayerNorm(detach(z_{i−1})))` for every IC
    but the first. A linear layer on a concatenation is the sum of two linear layers, so here exit i's logits are
    `head_i(h_i) + cascade_i(LayerNorm_i(detach(z_{i−1})))`: `head_i` is the model's head (its Linear is the
    features part and keeps the bias) and `cascade_i` a bias-free Linear(C→C) in `extra` (the logits part).
    (2) Geometric ensembles: IC i's output is `z̃_i = (1/(i+1)) Σ_{j≤i} exp(w_ij)·log_softmax(z_j) + b_i`, w ~ N(0,0.01)
    and b = 0 at init. As in the authors' code, the deepest exit is the backbone's own classifier: it is not
    cascaded and not ensembled (`ZTWCascading`/`ZTWEnsembling` pass the base model's final output through).

    Phases: "backbone" (blocks + deepest head, CE of the deepest exit; the authors start from a trained backbone),
    "cascade" (backbone and deepest head frozen: IC heads + LayerNorms + cascade layers, mean CE over the ICs),
    "ensemble" (everything else frozen: ensemble w, b with mean CE of the ensemble outputs over the ICs).
    Frozen BatchNorm layers run in eval mode (the engine's `set_mode`), as the authors' `train('without_backbone')`.

    What `forward` returns: `forward` gets no phase, so the method keeps a stage, set when a phase starts (its
    `trainable` selector is called by the engine exactly then). In the "backbone" and "cascade" stages the ICs'
    own logits (what those phases train; the validation log reports them); otherwise, i.e. in and after the
    "ensemble" phase and for a method never trained here (FLOPs counting), the ensemble outputs. Exit policy: max
    softmax of the ensemble outputs (`EarlyExitingBase` threshold mode)."""

    defaults = {"phase_fractions": [0.5, 0.3, 0.2]}
    source = ("Wołczyk et al. 2021, Zero Time Waste (NeurIPS), arXiv 2106.05409; gmum/Zero-Time-Waste "
              "ztw_cv/architectures/early_exits/ztw.py (ZTWCascading, GeometricWeightedEnsemble), heads.py")
    choices = {
        "phase_fractions": "ours: epochs of the backbone / cascade / ensemble phases ∝ [0.5, 0.3, 0.2] (the authors "
                           "train each stage as a separate run to convergence); largest remainder, each phase ≥ 1 "
                           "epoch when epochs ≥ 3, later phases dropped with fewer epochs (then the outputs stay "
                           "those of the last phase run)",
        "architecture": "cascade as head_i(h) + Linear_noBias(LayerNorm(detach(z_{i−1}))) = the authors' Linear on "
                        "the concatenation (exactly equivalent); INFERRED init: the cascade Linear gets PyTorch's "
                        "default init with fan-in C (the authors' concatenated Linear has fan-in features + C); the "
                        "IC heads are our model's heads, not the authors' SDN-pool conv heads; the deepest exit is "
                        "neither cascaded nor ensembled (as the authors' code)",
        "training": "three phases inside one run, each with the engine's fresh AdamW + cosine schedule; frozen "
                    "BatchNorm layers keep their running statistics (engine, as the authors' train("
                    "'without_backbone')); in the backbone phase the ICs are evaluated without autograd",
        "loss": "cascade / ensemble phases: mean CE over the K−1 ICs; the authors average over all K outputs "
                "including the frozen deepest one, a constant, so the gradient differs by the factor (K−1)/K only, "
                "which Adam normalises away; the deepest exit's term is 0 there. Backbone phase: CE of the "
                "deepest exit, IC terms 0",
        "policy": "max softmax of the ensemble outputs (authors' threshold mode); the deepest exit is the raw "
                  "final classifier",
    }
    exit_policy = "max_softmax"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        fractions = self.params["phase_fractions"]
        if len(fractions) != 3 or not all(f > 0 for f in fractions):
            raise BenchError(f"methods.ztw.phase_fractions must be 3 positive numbers (backbone, cascade, "
                             f"ensemble), got {fractions!r}")
        if num_exits < 2:
            raise BenchError(f"methods.ztw needs a model with at least 2 exits, got {num_exits}")
        self.stage = "ensemble"  # what forward computes; set by each phase's `trainable` when the phase starts

    def extra_modules(self):
        return ZTWModules(self.num_exits - 1, self.num_classes)

    # ---- phases -----------------------------------------------------------------------------------------

    def trainable(self, stage: str, model, extra: ZTWModules) -> list[nn.Parameter]:
        if stage == "backbone":
            return model.backbone_parameters() + list(model.heads[-1].parameters())
        if stage == "cascade":
            return ([p for head in model.heads[:-1] for p in head.parameters()]
                    + list(extra.norms.parameters()) + list(extra.cascades.parameters()))
        return list(extra.ensembles.parameters())

    def enter(self, stage: str):
        """The phase's parameter selector: records the stage (so `forward` knows what to return), then selects."""
        def select(model, extra):
            self.stage = stage
            return self.trainable(stage, model, extra)
        return select

    def phases(self, epochs):
        counts = split_epochs(epochs, self.params["phase_fractions"])
        return [Phase(stage, n, self.enter(stage)) for stage, n in zip(STAGES, counts) if n > 0]

    # ---- forward ----------------------------------------------------------------------------------------

    def ic_logits(self, model, extra: ZTWModules, h: torch.Tensor, k: int, previous: torch.Tensor | None):
        """IC k's own (cascaded) logits from block k's output h."""
        head = model.heads[k]
        z = head(h)
        if k > 0:
            z = z + extra.cascades[k - 1](extra.norms[k - 1](previous.detach()))
        return z

    def ensemble(self, extra: ZTWModules, ic_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        logprobs = torch.stack([z.log_softmax(-1) for z in ic_logits], dim=1)  # [N, i+1, C]
        return [extra.ensembles[i](logprobs[:, :i + 1]) for i in range(len(ic_logits))]

    def forward(self, model, extra, x, upto=None):
        last = model.num_exits - 1 if upto is None else upto
        ics, final = [], None
        for k in range(last + 1):
            x = model.blocks[k](x)
            if k == model.num_exits - 1:
                final = model.heads[k](x)
            else:  # the ICs are not trained in the backbone phase: no autograd graph for them there
                with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage != "backbone"):
                    ics.append(self.ic_logits(model, extra, x, k, ics[-1] if ics else None))
        outputs = ics if self.stage in ("backbone", "cascade") else self.ensemble(extra, ics)
        return outputs + ([final] if final is not None else [])

    # ---- loss -------------------------------------------------------------------------------------------

    def exit_losses(self, logits, targets, ctx):
        if ctx.phase != self.stage:
            raise RuntimeError(f"ztw: forward ran in stage {self.stage!r} but the phase is {ctx.phase!r}; the "
                               "phase's `trainable` must be called when the phase starts (the engine does)")
        zero = [0.0 * z.sum() for z in logits]
        if self.stage == "backbone":
            return torch.stack(zero[:-1] + [F.cross_entropy(logits[-1], targets)])
        ics = [F.cross_entropy(z, targets) / (len(logits) - 1) for z in logits[:-1]]
        return torch.stack(ics + zero[-1:])
