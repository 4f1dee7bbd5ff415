"""Vectorised evaluation of exit decisions over cached per-exit logits (one split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.evaluate.policies import Policy, decision_report, exit_indices


@dataclass
class CachedSplit:
    """Per-exit policy scores, correctness, predictions and max-softmax confidence of one split, plus the
    cumulative FLOPs."""

    scores: torch.Tensor  # [K, N] float64
    correct: torch.Tensor  # [K, N] bool
    predictions: torch.Tensor  # [K, N] long
    labels: torch.Tensor  # [N]
    flops: np.ndarray  # [K] int64, cumulative FLOPs per exit
    confidence: torch.Tensor  # [K, N] max-softmax probability
    low: float = 0.0  # the policy's lowest threshold (scores below it never leave early, e.g. class_aware's −inf)
    integer: bool = False  # the policy's thresholds are integers

    @classmethod
    def from_logits(cls, policy: Policy, logits: torch.Tensor, labels: torch.Tensor, extras: dict | None,
                    flops: list[int]) -> "CachedSplit":
        predictions = logits.argmax(-1)
        return cls(policy.scores(logits, extras).double(), predictions == labels, predictions, labels,
                   np.asarray(flops, dtype=np.int64), logits.softmax(-1).amax(-1), float(policy.low), policy.integer)

    @property
    def num_exits(self) -> int:
        return self.scores.shape[0]

    def exits(self, thresholds) -> torch.Tensor:
        return exit_indices(self.scores, torch.as_tensor(thresholds, dtype=torch.float64))

    def evaluate(self, thresholds) -> tuple[float, float]:
        """(accuracy, expected FLOPs as a fraction of the deepest exit's) of one threshold vector."""
        exits = self.exits(thresholds)
        accuracy = self.correct.gather(0, exits.view(1, -1)).double().mean().item()
        cost = self.flops[exits.numpy()].mean() / self.flops[-1]
        return accuracy, float(cost)

    def report(self, thresholds) -> dict:
        """Everything recorded for a chosen policy on this split."""
        return decision_report(self.correct, self.exits(thresholds), self.flops.tolist(), self.confidence)
