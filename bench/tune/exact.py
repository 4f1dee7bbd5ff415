"""The exact accuracy-vs-cost curve of a single global threshold, by sorting the scores.

With one threshold t, a sample leaves at the first exit k < K−1 with score_k ≥ t, i.e. at exit ≤ k iff
M_k = max_{j≤k} score_j ≥ t. Lowering t from +∞, the sample moves from exit k+1 to exit k exactly when t
passes M_k. Sorting all N(K−1) breakpoints and accumulating the changes in correct count and FLOPs
(integers, so exact) gives the whole curve in O(NK log NK).

Decisions use the one rule of `bench.evaluate.policies.leaves` (float64 score ≥ threshold). A point's
decisions hold for every threshold in (next lower breakpoint, its breakpoint]; its operating threshold is
placed at the midpoint of that interval, not on a sample's score, so that rounding a threshold or a score
(float32 ↔ float64, JSON, CSV) cannot move a tied sample across it. Breakpoints below the policy's lowest
threshold are not operating points (such scores never leave early, e.g. class_aware's −inf); the lowest
point's interval ends at the policy's low. Integer policies keep the breakpoint itself (an exact integer).
"""

from __future__ import annotations

import numpy as np

from bench.tune.cached import CachedSplit


def placed_thresholds(boundaries: np.ndarray, low: float, integer: bool) -> np.ndarray:
    """Operating thresholds of descending distinct breakpoints: the midpoint between each and the next lower
    one (the policy's `low` under the last); the breakpoint itself for integer policies, or where no float64
    lies strictly between (adjacent values, or a breakpoint equal to `low`)."""
    if integer:
        return boundaries.copy()
    below = np.r_[boundaries[1:], low]
    middle = (boundaries + below) / 2
    return np.where((middle > below) & (middle <= boundaries), middle, boundaries)


def single_threshold_curve(split: CachedSplit) -> dict[str, np.ndarray]:
    """Every distinct operating point: thresholds (descending, first = +inf; see the module doc for their
    placement), boundary (the breakpoint: the point holds for thresholds in (next boundary, boundary]),
    correct counts, total FLOPs, accuracy and cost fraction."""
    scores = split.scores.numpy()
    correct = split.correct.numpy().astype(np.int64)
    k, n = scores.shape
    flops = split.flops
    start_correct, start_flops = int(correct[-1].sum()), int(flops[-1]) * n
    if k == 1:
        thresholds = boundaries = np.array([np.inf])
        cum_correct, cum_flops = np.array([start_correct]), np.array([start_flops])
    else:
        prefix_max = np.maximum.accumulate(scores[:-1], axis=0)  # M_k for k < K−1
        values = prefix_max.ravel()  # event at t ≤ M_k: sample moves from exit k+1 to exit k
        delta_correct = (correct[:-1] - correct[1:]).ravel()
        delta_flops = np.repeat(flops[:-1] - flops[1:], n)
        usable = values >= split.low  # no threshold of the policy's range lets a lower score leave
        values, delta_correct, delta_flops = values[usable], delta_correct[usable], delta_flops[usable]
        order = np.argsort(-values, kind="stable")
        values, delta_correct, delta_flops = values[order], delta_correct[order], delta_flops[order]
        cum_correct = start_correct + np.cumsum(delta_correct)
        cum_flops = start_flops + np.cumsum(delta_flops)
        last_of_group = np.r_[values[1:] != values[:-1], True][:len(values)]  # only after a whole tie group
        boundaries = np.r_[np.inf, values[last_of_group]]
        thresholds = np.r_[np.inf, placed_thresholds(values[last_of_group], split.low, split.integer)]
        cum_correct = np.r_[start_correct, cum_correct[last_of_group]]
        cum_flops = np.r_[start_flops, cum_flops[last_of_group]]
    return {"threshold": thresholds, "boundary": boundaries, "correct": cum_correct, "total_flops": cum_flops,
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
