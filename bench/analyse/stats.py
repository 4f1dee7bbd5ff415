"""Small, pure statistics used by the analysis (each tested against a slow, obvious reference).

- Confidence intervals across seeds: Student-t, mean ± t_{0.975, n−1} · s / √n (undefined for n < 2),
  clipped to the metric's range for accuracies and fractions.
- Paired comparison against a reference method over seeds: paired t-test, effect size d_z = mean(d)/sd(d),
  Holm–Bonferroni correction over the family of comparisons of one dataset.
- Expected calibration error: 15 equal-width confidence bins over [0, 1], Σ_b (n_b/N) |acc_b − conf_b|.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t_interval(values, level: float = 0.95, bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, lower, upper); the bounds are NaN with fewer than two values. `bounds` clips the interval to
    the metric's range (an accuracy interval never leaves [0, 1], however few the seeds)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def paired_test(values, reference) -> dict:
    """Paired t-test of values − reference over matched seeds."""
    diff = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    n = len(diff)
    out = {"n": n, "mean_difference": float(diff.mean()) if n else math.nan, "effect_size_dz": math.nan,
           "p_value": math.nan}
    if n >= 2:
        sd = diff.std(ddof=1)
        if sd > 0:  # identical differences on every seed leave the t-test undefined: no p-value then
            out["effect_size_dz"] = float(diff.mean() / sd)
            out["p_value"] = float(stats.ttest_rel(values, reference).pvalue)
    return out


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def calibration_bins(confidence, correct, bins: int = 15) -> dict:
    """Reliability-diagram data and the ECE of one exit (equal-width bins; the last bin includes 1.0)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = conf_sum / count, acc_sum / count
    ece = float(np.sum(np.where(count > 0, count * np.abs(accuracy - mean_conf), 0.0)) / len(confidence))
    return {"ece": ece, "count": count.tolist(), "confidence": np.nan_to_num(mean_conf).tolist(),
            "accuracy": np.nan_to_num(accuracy).tolist(), "bins": bins}
