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


SPLIT_KINDS = ("random", "blocks")


def window_is_uniform(region: np.ndarray, radius: int) -> np.ndarray:
    """True where every pixel within Chebyshev distance `radius` (clipped to the scene) has the same value."""
    padded = np.pad(region, radius, mode="edge")  # the edge value is already inside each clipped window
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * radius + 1, 2 * radius + 1))
    return windows.min(axis=(2, 3)) == windows.max(axis=(2, 3))


def block_split(scene: np.ndarray, fractions: dict[str, float], seed: int, rest: str, radius: int,
                block_size: int) -> tuple[dict[str, np.ndarray], dict]:
    """A spatially disjoint split of the labelled pixels of `scene` (H×W class ids, -1 = unlabelled).

    The scene is cut into `block_size` squares and whole squares go to the named splits and `rest`. A pixel
    is kept only if its patch (the window of `radius` around it, clipped to the scene; reflect padding reads
    only pixels inside it) lies inside squares of its own split, so no two kept pixels of different splits
    have overlapping patches: a guard band of 2·radius pixels separates the splits and the labelled pixels
    inside it are dropped. Squares are first chosen so that every class has pixels in every split (rarest
    classes first; the splits with the largest shares choose first), then the others go, in a seeded random order,
    to the split furthest below its share of labelled pixels. Several grid offsets are tried; the one that
    covers the most (split, class) pairs of the two largest splits, then of all, then matches the fractions best, then keeps most pixels, wins.
    A class whose pixels cannot reach a split with the blocks this grid allows is missing from it, listed
    in the returned info["missing"].

    Returns (sorted indices into the row-major list of labelled pixels per split, info); the same inputs
    always give the same split.
    """
    names = [*fractions, rest]
    shares = np.array([*fractions.values(), 1.0 - sum(fractions.values())])
    labelled = scene >= 0
    classes = np.unique(scene[labelled])
    flat_labels = scene[labelled]
    step = max(1, block_size // 4)
    offsets = [(dy, dx) for dy in range(0, block_size, step) for dx in range(0, block_size, step)]
    priority = np.argsort(-shares, kind="stable")  # the largest splits (test, train) claim rare classes first
    best = None
    for number, (dy, dx) in enumerate(offsets):
        rows, cols = np.indices(scene.shape)
        block_rows, block_cols = (rows + dy) // block_size, (cols + dx) // block_size
        blocks = block_rows * (block_cols.max() + 1) + block_cols
        n_blocks = int(blocks.max()) + 1
        core = labelled & window_is_uniform(blocks, radius)  # kept whatever the neighbouring blocks get
        core_counts = np.zeros((n_blocks, len(classes)), dtype=np.int64)
        np.add.at(core_counts, (blocks[core], np.searchsorted(classes, scene[core])), 1)
        totals = np.bincount(blocks[labelled], minlength=n_blocks)
        rng = np.random.default_rng([seed, number])
        order = rng.permutation(n_blocks)
        assign = np.full(n_blocks, -1)
        filled = np.zeros(len(names))
        covered = np.zeros((len(names), len(classes)), dtype=bool)
        rarity = np.argsort((core_counts > 0).sum(0), kind="stable")
        for c in rarity:
            for s in priority:
                if covered[s, c]:
                    continue
                candidates = [b for b in order if assign[b] < 0 and core_counts[b, c] > 0]
                if candidates:
                    assign[candidates[0]] = s
                    covered[s] |= core_counts[candidates[0]] > 0
                    filled[s] += totals[candidates[0]]
        target = shares * labelled.sum()
        for b in order:
            if assign[b] < 0 and totals[b] > 0:
                s = int(np.argmax((target - filled) / np.maximum(target, 1e-12)))
                assign[b], filled[s] = s, filled[s] + totals[b]
        grid = assign.reshape(-1, block_cols.max() + 1)
        for b in order:  # squares without labelled pixels join a neighbour's split: fewer pixels in guard bands
            if assign[b] < 0:
                i, j = divmod(b, grid.shape[1])
                around = grid[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
                around = around[around >= 0]
                assign[b] = np.bincount(around, minlength=len(names)).argmax() if len(around) else len(names) - 1
        region = assign[blocks]
        kept = labelled & window_is_uniform(region, radius)
        split_of = np.where(kept, region, -1)[labelled]
        counts = np.array([[np.sum((split_of == s) & (flat_labels == c)) for c in classes] for s in range(len(names))])
        kept_total = max(int(kept.sum()), 1)
        error = float(np.abs(counts.sum(1) / kept_total - shares).sum())
        score = (int((counts[priority[:2]] > 0).sum()), int((counts > 0).sum()), -round(error, 2), int(kept.sum()))
        if best is None or score > best[0]:
            best = (score, split_of, counts, (dy, dx))
    _, split_of, counts, offset = best
    out = {name: np.flatnonzero(split_of == s) for s, name in enumerate(names)}
    info = {"block_size": block_size, "guard_band": 2 * radius, "grid_offset": list(offset),
            "dropped": int(np.sum(split_of < 0)),
            "missing": {name: [int(classes[c]) for c in np.flatnonzero(counts[s] == 0)] for s, name in enumerate(names)}}
    return out, info


def stratified_holdout(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out exactly `count` indices of `labels`, spread over the classes in proportion to their sizes
    (largest remainders first, lowest class first on ties), every class keeping at least one sample in the
    rest; needs 1 <= count <= len(labels) - number of classes.

    Returns sorted (held out, rest) index arrays; the same (labels, count, seed) always give the same split.
    """
    classes, sizes = np.unique(labels, return_counts=True)
    if not 0 <= count <= len(labels) - len(classes):
        raise ValueError(f"cannot hold out {count} of {len(labels)} samples and keep one of each of {len(classes)} classes")
    quota = count * sizes / len(labels)
    take = np.minimum(np.floor(quota).astype(np.int64), sizes - 1)
    while take.sum() < count:  # one more to each class furthest below its quota that still has room
        room = np.flatnonzero(take < sizes - 1)
        order = room[np.argsort(-(quota[room] - take[room]), kind="stable")]
        for c in order[:count - take.sum()]:
            take[c] += 1
    rng = np.random.default_rng(seed)
    held, rest = [], []
    for c, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        held.append(idx[:take[c]])
        rest.append(idx[take[c]:])
    return np.sort(np.concatenate(held)), np.sort(np.concatenate(rest))
