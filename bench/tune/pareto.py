"""Non-dominated (accuracy ↑, cost ↓) points."""

from __future__ import annotations

import numpy as np


def pareto_mask(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """True where no other point has accuracy ≥ and cost ≤ with at least one strict (duplicates: first kept)."""
    accuracy, cost = np.asarray(accuracy, dtype=float), np.asarray(cost, dtype=float)
    order = np.lexsort((-accuracy, cost))  # by cost ascending, then accuracy descending
    keep = np.zeros(len(accuracy), dtype=bool)
    best = -np.inf
    for i in order:
        if accuracy[i] > best:
            keep[i] = True
            best = accuracy[i]
    return keep
