"""Seeded, stratified splits of a labelled index set."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int, rest: str) -> dict[str, np.ndarray]:
    """Split indices of `labels` per class: each named split gets round(fraction * n_class) samples
    (at least one while the class has samples left for `rest`), `rest` takes the remainder.

    Returns sorted index arrays; the same (labels, fractions, seed) always give the same split.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [] for name in [*fractions, rest]}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for name, frac in fractions.items():
            count = int(round(frac * len(idx)))
            count = max(count, 1) if len(idx) - start > 1 else count
            count = min(count, len(idx) - start - 1)  # always leave one for `rest`
            out[name].append(idx[start:start + max(count, 0)])
            start += max(count, 0)
        out[rest].append(idx[start:])
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A stratified subset of about `size` indices (all of them if size >= len(labels))."""
    if size >= len(labels):
        return np.arange(len(labels))
    return stratified_split(labels, {"keep": size / len(labels)}, seed, rest="drop")["keep"]
