"""Vectorised evaluation of exit decisions over cached per-exit logits (one split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.evaluate.policies import Policy, exit_indices


@dataclass
class CachedSplit:
    """Per-exit policy scores, correctness and predictions of one split, plus the cumulative FLOPs."""

    scores: torch.Tensor  # [K, N] float64
    correct: torch.Tensor  # [K, N] bool
    predictions: torch.Tensor  # [K, N] long
    labels: torch.Tensor  # [N]
    flops: np.ndarray  # [K] int64, cumulative FLOPs per exit

    @classmethod
    def from_logits(cls, policy: Policy, logits: torch.Tensor, labels: torch.Tensor, extras: dict | None,
                    flops: list[int]) -> "CachedSplit":
        predictions = logits.argmax(-1)
        return cls(policy.scores(logits, extras).double(), predictions == labels, predictions, labels,
                   np.asarray(flops, dtype=np.int64))

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
        exits = self.exits(thresholds)
        k = self.num_exits
        correct = self.correct.gather(0, exits.view(1, -1))[0]
        counts = torch.bincount(exits, minlength=k)
        return {
            "accuracy": correct.double().mean().item(),
            "expected_flops": float(self.flops[exits.numpy()].mean()),
            "flops_fraction": float(self.flops[exits.numpy()].mean() / self.flops[-1]),
            "exit_fractions": (counts.double() / len(exits)).tolist(),
            "accuracy_of_exited": [correct[exits == e].double().mean().item() if counts[e] else None for e in range(k)],
            "early_exit_accuracy": correct[exits < k - 1].double().mean().item() if (exits < k - 1).any() else None,
        }
