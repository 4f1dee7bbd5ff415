"""JEI-DNN: Jointly-Learned Exit and Inference for a Dynamic Neural Network (Regol, Chataoui, Coates,
ICLR 2024, arXiv 2310.09163; authors' code networkslab/dynn). Spec: docs/methods.md §2."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.train.method import Method, Phase, all_parameters, register_method

WARMUP, BILEVEL = "warmup", "bilevel"  # phase names
GATE, CLASSIFIER = "gate", "classifier"  # the two kinds of step inside the bi-level phase
MAX_POS_WEIGHT = 5.0  # `set_from_validation`: pos_weight = min(pos_weight, 5) "clip for stability"


def uncertainty_features(logits: torch.Tensor) -> torch.Tensor:
    """The gate's input, from an exit's logits [..., C] → [..., 4], detached (gates never send gradient
    into the network): [p_max, H(p), p_(1) − p_(2), H(p²/Σp²)], natural log, 0·log 0 = 0
    (code: `metrics_utils.compute_detached_uncertainty_metrics`, entropies via scipy.stats.entropy)."""
    p = logits.detach().float().softmax(-1)
    top2 = p.topk(2, dim=-1).values
    squared = p.pow(2)
    squared = squared / squared.sum(-1, keepdim=True)
    return torch.stack([top2[..., 0], torch.special.entr(p).sum(-1), top2[..., 0] - top2[..., 1],
                        torch.special.entr(squared).sum(-1)], dim=-1)


def gate_logits(gates: nn.ModuleList, logits) -> torch.Tensor:
    """Gate l's logit from exit l's logits, for every non-final exit: [K−1, N]."""
    return torch.stack([gate(uncertainty_features(z)).squeeze(-1) for gate, z in zip(gates, logits)])


def oracle_exit(ce: torch.Tensor, costs, cost_weight: float) -> torch.Tensor:
    """l* = argmin_l CE_l + λ·C_l per sample, over every exit including the last (cost 1): ce [K, N] → [N]
    (code: `GateTrainingHelper.get_loss`, `gate_target = argmin(intermediate_losses)`)."""
    cost = torch.as_tensor(costs, dtype=ce.dtype, device=ce.device).view(-1, 1)
    return (ce + cost_weight * cost).argmin(0)


def gate_targets(l_star: torch.Tensor, num_exits: int) -> torch.Tensor:
    """"Exit-subsequent" targets t_l = 1[l ≥ l*] for the K−1 gates: [N] → [K−1, N] (code:
    `_get_exit_subsequent_loss`, cumsum of the one-hot oracle exit without its last column)."""
    return (torch.arange(num_exits - 1, device=l_star.device).view(-1, 1) >= l_star.view(1, -1)).float()


def positive_weights(l_star: torch.Tensor, num_gates: int, cap: float = MAX_POS_WEIGHT) -> torch.Tensor:
    """Per-gate BCE weight of the 1-targets from a histogram of oracle exits (the validation split's):
    w_l = min(cap, (N − n_l) / n_l), n_l = max(0.1, #samples with l* = l) — exactly l, as in the code's
    `set_from_validation` (account_subsequent=False), not the number of 1-targets under exit-subsequent."""
    if l_star.numel() == 0:
        return torch.ones(num_gates)
    counts = torch.bincount(l_star.flatten().cpu(), minlength=num_gates + 1)[:num_gates].double().clamp(min=0.1)
    return ((l_star.numel() - counts) / counts).clamp(max=cap).float()


def exit_probabilities(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From gate probabilities g [K−1, N]: the direct exit probabilities P_l = max(0, min(g_l, 1 − Σ_{k<l} g_k))
    and the conditional ones c_l = clip(P_l / Π_{k<l}(1 − c_k), 0, 1) used by the inference rule (code:
    `ClassifierTrainingHelper.get_loss`, WEIGHTED mode). Where Π_{k<l}(1 − c_k) = 0 an earlier c_k is 1,
    so every threshold in [0, 1] already stopped the sample: c_l is set to 1 there instead of 0/0 = NaN."""
    previous_g = torch.cat([torch.zeros_like(g[:1]), torch.cumsum(g, 0)[:-1]])  # Σ_{k<l} g_k
    P = torch.clamp(torch.minimum(g, 1 - previous_g), min=0)
    c, stay = torch.empty_like(g), torch.ones_like(g[0])
    for l in range(g.shape[0]):
        c[l] = torch.where(stay > 0, (P[l] / stay.clamp(min=torch.finfo(g.dtype).tiny)).clamp(0, 1),
                           torch.ones_like(stay))
        stay = stay * (1 - c[l])
    return P, c


def bilevel_step_kind(step_in_phase: int, every: int) -> str:
    """Alternate every `every` steps, starting with GATE steps (code: `train_single_epoch`, the first switch
    from CLASSIFIER at batch 0 goes to GATE)."""
    return GATE if (step_in_phase // every) % 2 == 0 else CLASSIFIER


def warmup_epochs(epochs: int, fraction: float) -> int:
    """round-half-up(fraction × epochs), at least 1 and leaving at least 1 bi-level epoch when epochs ≥ 2."""
    if epochs < 2:
        return 0
    return min(epochs - 1, max(1, math.floor(fraction * epochs + 0.5)))


@register_method("jei_dnn")
class JEIDNN(Method):
    """JEI-DNN (Regol et al., ICLR 2024; networkslab/dynn). Inference modules (IMs) are our exit heads; one gate
    per non-final exit, `Linear(4 → 1)` on the detached uncertainty features of that exit's softmax, g_l = σ(·).

    Training (docs/methods.md §2.4): (1) warm-up, L = CE(final) + Σ_{l<G} (G+1−l)·CE(IM_l), G = K−1 gates
    (`get_warmup_loss`); (2) bi-level alternation every `bilevel_batch_count` steps, GATE steps first:
    GATE steps train only the gates with the mean of the class-weighted BCE between gate logits and the
    exit-subsequent targets 1[l ≥ l*], l* = argmin_l CE(IM_l) + λ·C_l (C_l = cumulative FLOPs fraction, the last
    exit 1; λ = `cost_weight`, the code's `--ce_ic_tradeoff`, default 0.7; README example 0.15); the weight of
    the 1-targets of gate l is min(5, #0/#1) from the validation histogram of l*, refit after every bi-level epoch
    (`set_from_validation`, after bi-level epochs only; 1 before the first fit, i.e. through the warm-up and the
    first bi-level epoch, as in `GateTrainingHelper.__init__`).
    CLASSIFIER steps train the network with the plain mean CE over all exits.

    Inference-module loss, our decision: the released code's P-weighted loss
    mean(P·CE·(ΣCE / ΣP·CE)) does not detach the ratio, so per sample it equals ΣCE and its gradient is that
    of the unweighted mean CE; we use that mean (what the code actually optimises) rather than inventing a
    detached-ratio weighting whose exact form in the paper we could not read (NOT FOUND). Unlike the code, the
    final exit is included: our final head is trained from scratch, the code's is a frozen pretrained head.

    Our setting: backbone and heads are trained jointly from scratch (the code freezes a fine-tuned T2T-ViT and
    trains only IMs and gates). Per-exit term k holds exit k's IM loss (warm-up, CLASSIFIER steps) or gate k's
    BCE (GATE steps; the final exit has no gate, so its term is 0 there). Exit policy `learned_gate`: a sample
    leaves at the first exit with c_l ≥ threshold (0.5 in the code); `eval_outputs` gives c and g."""

    defaults = {"warmup_fraction": 0.3, "bilevel_batch_count": 50, "cost_weight": 0.7}
    source = ("Regol, Chataoui, Coates, ICLR 2024 (arXiv 2310.09163); networkslab/dynn: "
              "learnable_uncertainty_gate.py, gate_training_helper.py, classifier_training_helper.py, "
              "learning_helper.get_warmup_loss, our_train_helper.train_single_epoch / set_from_validation")
    choices = {
        "warmup_fraction": "ours: warm-up length = round-half-up(0.3 × epochs), ≥ 1 epoch and ≤ epochs − 1 when "
                           "epochs ≥ 2 (1 epoch → no warm-up). The code warms up 1–6 epochs with per-IM early "
                           "stopping on validation accuracy (patience 2), restoring and freezing each IM's best "
                           "weights; NOT done here: the backbone is shared and keeps training, so a frozen head "
                           "would go stale, and the engine restores no weights.",
        "bilevel_batch_count": "ours: 50 (code 200, with epochs of hundreds of batches). Counted in optimiser "
                               "steps since the start of the bi-level phase; the code counts the batch index "
                               "within each epoch (batch_idx % 200, every epoch starting with GATE), which with "
                               "our short epochs (e.g. ~33 Indian Pines steps) would never reach a CLASSIFIER step.",
        "cost_weight": "λ = 0.7, the code's --ce_ic_tradeoff default (README example 0.15; runs sweep 0.01–7); "
                       "C_l = self.cost_fractions (counted FLOPs, not the code's MACs incl. gate cost; same ratio).",
        "training": "ours: backbone + heads trained jointly from scratch (code: frozen fine-tuned backbone). "
                    "Two engine phases, 'warmup' (network only; gates frozen) and 'bilevel' (network + gates): "
                    "each gets a fresh AdamW and cosine schedule (code: one SGD, cosine over all epochs). "
                    "GATE steps still run the network forward in train mode, so BatchNorm statistics update "
                    "(the code's T2T-ViT has LayerNorm only). Per-IM freezing of the warm-up not done.",
        "architecture": "gates as in the code: Linear(4 → 1) per non-final exit on the detached features "
                        "[p_max, entropy, margin, entropy of p²/Σp²] of that exit's logits, PyTorch default init. "
                        "Gate cost (code counts 9C + 6 FLOPs per gate; the Linear is 8 FLOPs + bias) is not in our "
                        "FLOP counts: gates act on logits at policy time, outside method.forward; negligible next "
                        "to a conv exit.",
        "loss": "IMs: plain mean CE over all K exits, = the gradient of the code's P-weighted loss with its "
                "non-detached ratio (docs §2.4), final exit included (ours; the code's final head is frozen). "
                "Warm-up: the code's CE(final) + Σ (G+1−l)·CE(IM_l), final head trained too (ours). Gates: mean "
                "BCEWithLogits over samples × gates, 1-targets weighted min(5, #0/#1) with #1 = validation samples "
                "whose oracle exit is exactly l (the code's set_from_validation), refit after each bi-level epoch "
                "(not after warm-up epochs, as the code).",
        "policy": "learned_gate: first exit with conditional c_l ≥ threshold (code: 0.5; the benchmark sweeps "
                  "thresholds); 0/0 in c_l (unreachable: an earlier c_k = 1) → 1 instead of NaN (ours).",
    }
    exit_policy = "learned_gate"

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        p = self.params
        if num_exits < 2:
            raise BenchError(f"methods.jei_dnn needs a model with at least 2 exits; this one has {num_exits}")
        if not 0.0 <= p["warmup_fraction"] < 1.0:
            raise BenchError(f"methods.jei_dnn.warmup_fraction must be in [0, 1), got {p['warmup_fraction']}")
        if p["bilevel_batch_count"] < 1:
            raise BenchError(f"methods.jei_dnn.bilevel_batch_count must be ≥ 1, got {p['bilevel_batch_count']}")
        if p["cost_weight"] < 0:
            raise BenchError(f"methods.jei_dnn.cost_weight must be ≥ 0, got {p['cost_weight']}")
        self.num_gates = num_exits - 1
        self.bilevel_start: int | None = None  # optimiser step of the first bi-level step

    def extra_modules(self) -> nn.ModuleList:
        gates = nn.ModuleList([nn.Linear(4, 1) for _ in range(self.num_gates)])
        gates.register_buffer("pos_weight", torch.ones(self.num_gates))  # saved with the gates in checkpoints
        return gates

    def phases(self, epochs):
        warm = warmup_epochs(epochs, self.params["warmup_fraction"])
        network_only = lambda model, extra: list(model.parameters())  # noqa: E731
        return [phase for phase in (Phase(WARMUP, warm, network_only), Phase(BILEVEL, epochs - warm, all_parameters))
                if phase.epochs > 0]

    def step_kind(self, ctx) -> str:
        if ctx.phase == WARMUP:
            return WARMUP
        if self.bilevel_start is None or ctx.step < self.bilevel_start:
            self.bilevel_start = ctx.step
        return bilevel_step_kind(ctx.step - self.bilevel_start, self.params["bilevel_batch_count"])

    def exit_losses(self, logits, targets, ctx):
        kind = self.step_kind(ctx)
        if kind == GATE:
            return self.gate_losses(ctx.extra, logits, targets)
        ce = torch.stack([F.cross_entropy(z, targets) for z in logits])
        if kind == WARMUP:
            weights = [self.num_gates + 1 - l for l in range(self.num_gates)] + [1]
            return ce * torch.tensor(weights, dtype=ce.dtype, device=ce.device)
        return ce / self.num_exits

    def gate_losses(self, gates, logits, targets):
        """Per-gate terms whose sum is mean_{n,l} w·BCE(gate logit, 1[l ≥ l*]); depends on gate parameters only."""
        with torch.no_grad():
            ce = torch.stack([F.cross_entropy(z.float(), targets, reduction="none") for z in logits])
            t = gate_targets(oracle_exit(ce, self.cost_fractions, self.params["cost_weight"]), self.num_exits)
        a = gate_logits(gates, logits)
        bce = F.binary_cross_entropy_with_logits(a, t, pos_weight=gates.pos_weight.view(-1, 1), reduction="none")
        terms = bce.sum(1) / bce.numel()
        return torch.cat([terms, terms.new_zeros(1)])

    def eval_outputs(self, extra, logits):
        g = torch.sigmoid(gate_logits(extra, logits[:-1]))
        _, c = exit_probabilities(g)
        ones = torch.ones_like(g[:1])
        return {"gate_exit_prob": torch.cat([c, ones]), "gate_prob": torch.cat([g, ones])}

    def epoch_end(self, extra, val_logits, val_labels, ctx):
        """Refit the gates' positive-class weights from the validation histogram of the oracle exit, after
        bi-level epochs only (the authors' `set_from_validation` runs after bi-level epochs; the warm-up leaves
        them at 1.0, so the first bi-level epoch trains the gates with 1.0)."""
        if ctx.phase != BILEVEL:
            return
        ce = torch.stack([F.cross_entropy(z.float(), val_labels.to(z.device), reduction="none") for z in val_logits])
        l_star = oracle_exit(ce, self.cost_fractions, self.params["cost_weight"])
        with torch.no_grad():
            extra.pos_weight.copy_(positive_weights(l_star, self.num_gates))
