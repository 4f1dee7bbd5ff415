"""Risk-controlled global thresholds ("Fast yet Safe", Jazbec et al. 2024; code metodj/RC-EENN).

Risk of threshold λ on a sample: the prediction gap 1[ŷ_λ ≠ y] − 1[ŷ_full ≠ y] (ŷ_full = deepest exit), in
[−1, 1]. Scanning λ from the most conservative value downwards, the calibrator returns the most aggressive
λ before the first one whose risk bound exceeds ε:
- CRC (conformal risk control): R̂(λ) ≤ ((n+1)ε − B)/n with B = 1, controls the expected risk at ε;
- UCB: a Waudby-Smith–Ramdas betting upper confidence bound at level δ, so P(risk > ε) ≤ δ.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from bench.tune.cached import CachedSplit


def prediction_gap(split: CachedSplit, threshold: float) -> np.ndarray:
    exits = split.exits(threshold)
    early = split.correct.gather(0, exits.view(1, -1))[0].numpy()
    full = split.correct[-1].numpy()
    return (~early).astype(np.float64) - (~full).astype(np.float64)


def wsr_upper_bound(x: np.ndarray, delta: float) -> float:
    """Upper confidence bound at level δ for the mean of x ∈ [0, 1] (Waudby-Smith & Ramdas, betting with
    predictable plug-in bets): the smallest μ such that the wealth process against μ stays below 1/δ."""
    n = len(x)
    if n == 0:
        return 1.0
    steps = np.arange(1, n + 1)
    mean = (np.cumsum(x) + 0.5) / (steps + 1)
    var = (np.cumsum((x - mean) ** 2) + 0.25) / (steps + 1)
    var = np.r_[0.25, var[:-1]]  # predictable: bet i uses data before i
    bets = np.minimum(np.sqrt(2 * np.log(1 / delta) / (n * var)), 1.0)

    def log_wealth_excess(mu: float) -> float:
        return np.max(np.cumsum(np.log1p(-bets * (x - mu)))) + np.log(delta)

    if log_wealth_excess(1.0 - 1e-10) < 0:
        return 1.0
    if log_wealth_excess(1e-10) > 0:
        return 0.0
    return float(brentq(log_wealth_excess, 1e-10, 1 - 1e-10, maxiter=1000))


def calibrate(split: CachedSplit, grid_descending: np.ndarray, epsilon: float, delta: float, method: str) -> float:
    """Most aggressive threshold of the grid (scanned from conservative to aggressive) whose bound holds;
    the first grid value (nobody exits early, zero gap) is returned when none does."""
    n = split.scores.shape[1]
    order = np.random.default_rng(0).permutation(n)  # the betting bound is sequential: no split order effects
    chosen = float(grid_descending[0])
    for threshold in grid_descending:
        gap = prediction_gap(split, float(threshold))[order]
        if method == "crc":
            ok = gap.mean() <= ((n + 1) * epsilon - 1.0) / n
        elif method == "ucb":
            ok = 2 * wsr_upper_bound((gap + 1) / 2, delta) - 1 <= epsilon
        else:
            raise ValueError(f"unknown risk-control method {method!r}")
        if not ok:
            break
        chosen = float(threshold)
    return chosen
