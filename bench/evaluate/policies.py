"""Exit policies. Each maps every exit's outputs to a per-exit score [K, N]; a sample leaves at the first
exit whose score reaches that exit's threshold, and the last exit takes every sample still inside. The
policy declares the range its thresholds live in (what the tuner searches). "Reaches" has one definition,
`leaves`, used by every stage (evaluate, tune, real inference): score ≥ threshold, both in float64."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from bench.errors import BenchError
from bench.registry import Registry


@dataclass(frozen=True)
class Policy:
    name: str
    score: Callable[[torch.Tensor, dict], torch.Tensor]  # logits [K, N, C], extras → scores [K, N]
    low: float  # thresholds are searched in [low, high]
    high: float
    integer: bool = False
    needs: tuple[str, ...] = ()  # keys of the run's saved extras the policy reads

    def scores(self, logits: torch.Tensor, extras: dict | None = None) -> torch.Tensor:
        extras = extras or {}
        missing = [key for key in self.needs if key not in extras]
        if missing:
            raise BenchError(f"exit policy {self.name!r} needs {', '.join(missing)}, which this run's method does "
                             f"not save (its logits.pt extras: {', '.join(extras) or 'none'}); use the method's own "
                             "policy (tune.policy: method) or a policy that reads only the logits")
        return self.score(logits, extras)


POLICIES: Registry[Policy] = Registry("exit policy")


def register_policy(policy: Policy) -> Policy:
    return POLICIES.register(policy.name)(policy)


def max_softmax(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """Maximum softmax probability."""
    return logits.softmax(-1).amax(-1)


def entropy_confidence(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """1 − H(p)/log C, so that "entropy below h" is "score at least 1 − h/log C" (BranchyNet's rule)."""
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return 1.0 - entropy / math.log(logits.shape[-1])


def patience(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """PABEE (Zhou et al. 2020): the counter of consecutive exits agreeing with the previous one's
    prediction (0 at the first exit, +1 on agreement, reset to 0 on disagreement); exit when counter ≥ patience."""
    predictions = logits.argmax(-1)
    counter = torch.zeros_like(predictions, dtype=torch.float32)
    for k in range(1, logits.shape[0]):
        counter[k] = torch.where(predictions[k] == predictions[k - 1], counter[k - 1] + 1, 0.0)
    return counter


def beem(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """BEEM (Bajpai & Hanawal 2025): S_k = w_k·maxsoftmax_k + S_{k−1} while exit k agrees with exit k−1,
    reset to w_k·maxsoftmax_k on disagreement; w_k = 0.1·(k+1) as in the authors' code (`w = [0.1·i]`)."""
    probs = logits.softmax(-1)
    confidence, predictions = probs.amax(-1), probs.argmax(-1)
    weights = 0.1 * torch.arange(1, logits.shape[0] + 1, dtype=confidence.dtype)
    score = torch.zeros_like(confidence)
    for k in range(logits.shape[0]):
        score[k] = weights[k] * confidence[k]
        if k > 0:
            score[k] = score[k] + torch.where(predictions[k] == predictions[k - 1], score[k - 1], 0.0)
    return score


def learned_gate(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """JEI-DNN: the method's conditional exit probability per exit (extras['gate_exit_prob'] [K, N])."""
    return extras["gate_exit_prob"]


def class_aware(logits: torch.Tensor, extras: dict) -> torch.Tensor:
    """ClassyNet (Ayyat et al. 2024): an exit answers only for its priority classes. Max softmax where the
    exit's prediction is one of them (extras['priority_mask'] [K, N], nonzero = allowed), −inf elsewhere: below
    every threshold, so such a sample goes on (the deepest exit takes everything still inside)."""
    return torch.where(extras["priority_mask"].to(logits.device) > 0, max_softmax(logits, extras), -math.inf)


register_policy(Policy("max_softmax", max_softmax, 0.0, 1.0))
register_policy(Policy("entropy", entropy_confidence, 0.0, 1.0))
register_policy(Policy("patience", patience, 0.0, 8.0, integer=True))
register_policy(Policy("beem", beem, 0.0, 4.0))
register_policy(Policy("learned_gate", learned_gate, 0.0, 1.0, needs=("gate_exit_prob",)))
register_policy(Policy("class_aware", class_aware, 0.0, 1.0, needs=("priority_mask",)))


def leaves(scores: torch.Tensor, thresholds) -> torch.Tensor:
    """THE comparison rule of every stage: a sample may leave at exit k when score_k ≥ threshold_k, with the
    score and the threshold both as float64 (a float32 score is widened exactly; a threshold is never rounded
    to float32). scores [M, N], thresholds: M values or one → bool [M, N]."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    return scores.double() >= thresholds.expand(scores.shape[0]).view(-1, 1)


def exit_indices(scores: torch.Tensor, thresholds: torch.Tensor | float) -> torch.Tensor:
    """[K, N] scores, per-exit thresholds (K−1 values or one) → exit index per sample (by `leaves`)."""
    k = scores.shape[0]
    early = leaves(scores[:-1], thresholds) if k > 1 else torch.zeros(0, scores.shape[1], dtype=torch.bool)
    decided = torch.cat([early, torch.ones(1, scores.shape[1], dtype=torch.bool)])
    return decided.int().argmax(0)  # first True


def decision_report(correct: torch.Tensor, exits: torch.Tensor, cumulative_flops, confidence: torch.Tensor) -> dict:
    """Accuracy, expected FLOPs (Σ_k fraction_k × cumulative FLOPs_k), exit distribution, accuracy of the
    samples leaving at each exit (None where none does), early-exit accuracy and the ECE of the predictions
    actually returned (each sample's max-softmax at the exit it took) of one exit decision, from per-exit
    correctness and confidence [K, N]."""
    from bench.analyse.stats import calibration_bins

    k = correct.shape[0]
    chosen = correct.gather(0, exits.view(1, -1))[0]
    counts = torch.bincount(exits, minlength=k)
    flops = torch.as_tensor(cumulative_flops, dtype=torch.float64)
    expected = float((counts.double() / len(exits) * flops).sum())
    early = exits < k - 1
    return {
        "accuracy": chosen.double().mean().item(),
        "expected_flops": expected,
        "flops_fraction": expected / float(flops[-1]),
        "exit_fractions": (counts.double() / len(exits)).tolist(),
        "accuracy_of_exited": [chosen[exits == e].double().mean().item() if counts[e] else None for e in range(k)],
        "early_exit_accuracy": chosen[early].double().mean().item() if early.any() else None,
        "early_exit_fraction": early.double().mean().item(),
        "ece": calibration_bins(confidence.gather(0, exits.view(1, -1))[0].numpy(), chosen.numpy())["ece"],
    }


def evaluate_policy(logits: torch.Tensor, labels: torch.Tensor, exits: torch.Tensor, cumulative_flops: list[int]) -> dict:
    """`decision_report` for logits [K, N, C] and labels [N]."""
    return decision_report(logits.argmax(-1) == labels, exits, cumulative_flops, logits.softmax(-1).amax(-1))
