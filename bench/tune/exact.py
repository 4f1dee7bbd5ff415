"""The exact accuracy-vs-cost curve of a single global threshold, by sorting the scores.

With one threshold t, a sample leaves at the first exit k < K−1 with score_k ≥ t, i.e. at exit ≤ k iff
M_k = max_{j≤k} score_j ≥ t. Lowering t from +∞, the sample moves from exit k+1 to exit k exactly when t
passes M_k. Sorting all N(K−1) breakpoints and accumulating the changes in correct count and FLOPs
(integers, so exact) gives the whole curve in O(NK log NK).
"""

from __future__ import annotations

import numpy as np

from bench.tune.cached import CachedSplit


def single_threshold_curve(split: CachedSplit) -> dict[str, np.ndarray]:
    """Every distinct operating point: thresholds (descending, first = +inf), correct counts, total FLOPs,
    accuracy and cost fraction."""
    scores = split.scores.numpy()
    correct = split.correct.numpy().astype(np.int64)
    k, n = scores.shape
    flops = split.flops
    start_correct, start_flops = int(correct[-1].sum()), int(flops[-1]) * n
    if k == 1:
        thresholds = np.array([np.inf])
        cum_correct, cum_flops = np.array([start_correct]), np.array([start_flops])
    else:
        prefix_max = np.maximum.accumulate(scores[:-1], axis=0)  # M_k for k < K−1
        values = prefix_max.ravel()  # event at t ≤ M_k: sample moves from exit k+1 to exit k
        delta_correct = (correct[:-1] - correct[1:]).ravel()
        delta_flops = np.repeat(flops[:-1] - flops[1:], n)
        order = np.argsort(-values, kind="stable")
        values, delta_correct, delta_flops = values[order], delta_correct[order], delta_flops[order]
        cum_correct = start_correct + np.cumsum(delta_correct)
        cum_flops = start_flops + np.cumsum(delta_flops)
        last_of_group = np.r_[values[1:] != values[:-1], True]  # the curve exists only after a whole tie group
        thresholds = np.r_[np.inf, values[last_of_group]]
        cum_correct = np.r_[start_correct, cum_correct[last_of_group]]
        cum_flops = np.r_[start_flops, cum_flops[last_of_group]]
    return {"threshold": thresholds, "correct": cum_correct, "total_flops": cum_flops,
            "accuracy": cum_correct / n, "flops_fraction": cum_flops / (n * flops[-1])}


def best_single_threshold(curve: dict[str, np.ndarray], budget: float) -> int | None:
    """Index of the most accurate point with cost fraction ≤ budget (ties: the cheaper one)."""
    feasible = np.flatnonzero(curve["flops_fraction"] <= budget + 1e-12)
    if len(feasible) == 0:
        return None
    best = feasible[np.lexsort((curve["flops_fraction"][feasible], -curve["correct"][feasible]))[0]]
    return int(best)


def finite_threshold(value: float, high: float) -> float:
    """+inf (nobody exits early) as a concrete threshold above the policy's range (scores never exceed
    `high`), so that results stay plain JSON."""
    return float(high + 1.0) if np.isinf(value) else float(value)
