"""Exit policies: a per-exit confidence score; a sample leaves at the first exit whose score reaches the
threshold, and the last exit takes every sample still inside."""

from __future__ import annotations

import math

import torch

from bench.registry import Registry

POLICIES: Registry = Registry("exit policy")


@POLICIES.register("max_softmax")
def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """[K, N, C] logits → [K, N] maximum softmax probability."""
    return logits.softmax(-1).amax(-1)


@POLICIES.register("entropy")
def entropy_confidence(logits: torch.Tensor) -> torch.Tensor:
    """1 − H(p)/log C, so that "entropy below h" is "score at least 1 − h/log C" (BranchyNet's rule)."""
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return 1.0 - entropy / math.log(logits.shape[-1])


def exit_indices(scores: torch.Tensor, thresholds: torch.Tensor | float) -> torch.Tensor:
    """[K, N] scores, per-exit thresholds (K−1 values or one) → exit index per sample."""
    k = scores.shape[0]
    thresholds = torch.as_tensor(thresholds, dtype=scores.dtype).expand(k - 1) if k > 1 else torch.zeros(0)
    leaves = scores[:-1] >= thresholds.view(-1, 1)
    leaves = torch.cat([leaves, torch.ones(1, scores.shape[1], dtype=torch.bool)])
    return leaves.int().argmax(0)  # first True


def evaluate_policy(logits: torch.Tensor, labels: torch.Tensor, exits: torch.Tensor, cumulative_flops: list[int]) -> dict:
    """Accuracy, expected FLOPs (Σ_k fraction_k × cumulative FLOPs_k) and exit distribution of a decision."""
    k = logits.shape[0]
    predictions = logits.argmax(-1).gather(0, exits.view(1, -1))[0]
    correct = predictions == labels
    counts = torch.bincount(exits, minlength=k)
    fractions = counts.double() / len(labels)
    flops = torch.tensor(cumulative_flops, dtype=torch.float64)
    per_exit_acc = [float(correct[exits == e].double().mean()) if counts[e] > 0 else float("nan") for e in range(k)]
    return {
        "accuracy": float(correct.double().mean()),
        "expected_flops": float((fractions * flops).sum()),
        "flops_fraction": float((fractions * flops).sum() / flops[-1]),
        "exit_fractions": fractions.tolist(),
        "accuracy_of_exited": per_exit_acc,
    }
