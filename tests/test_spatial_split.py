"""The spatially disjoint (blocks) split of a labelled scene: no training patch overlaps a val/test patch
(checked by brute force over pixel pairs), class coverage where the scene allows it, determinism; and the
random split of Indian Pines unchanged."""

import copy
import hashlib

import numpy as np
import pytest

from bench.config import validate
from bench.data.splits import block_split, stratified_split
from bench.errors import BenchError

FRACTIONS = {"train": 0.2, "val": 0.1}


def synthetic_scene(seed=0, size=60, classes=4):
    """Fields of several classes (rectangles, each class in several places) on an unlabelled background."""
    rng = np.random.default_rng(seed)
    scene = np.full((size, size), -1)
    for _ in range(24):
        r, c = rng.integers(0, size - 10, 2)
        h, w = rng.integers(4, 14, 2)
        scene[r:r + h, c:c + w] = rng.integers(0, classes)
    return scene


def patches_overlap(a, b, radius):
    """Brute force: do the (2r+1)² windows around pixels a and b share a pixel (both clipped to the scene)?"""
    rows_a, cols_a = set(range(a[0] - radius, a[0] + radius + 1)), set(range(a[1] - radius, a[1] + radius + 1))
    rows_b, cols_b = set(range(b[0] - radius, b[0] + radius + 1)), set(range(b[1] - radius, b[1] + radius + 1))
    return bool(rows_a & rows_b) and bool(cols_a & cols_b)


@pytest.mark.parametrize("radius,block_size,seed", [(1, 8, 0), (2, 10, 1), (3, 12, 2)])
def test_no_train_patch_overlaps_a_val_or_test_patch(radius, block_size, seed):
    scene = synthetic_scene(seed)
    split, info = block_split(scene, FRACTIONS, seed, "test", radius, block_size)
    pixels = np.argwhere(scene >= 0)  # row-major: the order the indices refer to
    assert all(len(split[s]) > 0 for s in split)
    names = list(split)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for a in pixels[split[first]]:
                for b in pixels[split[second]]:
                    assert not patches_overlap(tuple(a), tuple(b), radius), (first, second, a, b)
    kept = np.concatenate(list(split.values()))
    assert len(np.unique(kept)) == len(kept)  # disjoint
    assert info["dropped"] == (scene >= 0).sum() - len(kept)
    assert info["guard_band"] == 2 * radius


def test_every_class_in_every_split_when_the_scene_allows():
    scene = synthetic_scene(3, size=80, classes=3)
    split, info = block_split(scene, FRACTIONS, 0, "test", 2, 10)
    labels = scene[scene >= 0]
    for name, idx in split.items():
        assert set(labels[idx]) == {0, 1, 2}, name
    assert info["missing"] == {"train": [], "val": [], "test": []}


def test_a_class_too_small_to_split_is_reported_missing_and_goes_to_the_largest_split():
    scene = synthetic_scene(3, size=80, classes=3)
    scene[70:73, 70:73] = 3  # one 3×3 field: a guard band of 4 cannot cut it into three splits
    split, info = block_split(scene, FRACTIONS, 0, "test", 2, 10)
    labels = scene[scene >= 0]
    present = {name: 3 in set(labels[idx]) for name, idx in split.items()}
    assert present["test"] and sum(present.values()) == 1  # test (the largest share) claims it first
    assert [name for name, miss in info["missing"].items() if 3 in miss] == [n for n, p in present.items() if not p]


def test_blocks_split_is_deterministic_and_seeded():
    scene = synthetic_scene(5)
    a, info_a = block_split(scene, FRACTIONS, 7, "test", 2, 10)
    b, info_b = block_split(scene, FRACTIONS, 7, "test", 2, 10)
    c, _ = block_split(scene, FRACTIONS, 8, "test", 2, 10)
    assert all(np.array_equal(a[k], b[k]) for k in a) and info_a == info_b
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_random_split_of_indian_pines_is_unchanged(real_params):
    """Same pixels per split as before the blocks option: per-class stratified_split over row-major pixels."""
    from bench.data.indian_pines import prepare

    params = validate(copy.deepcopy(real_params))["prepare"]["indian_pines"]
    assert params["split"] == "random"  # the default
    prepared = prepare(params)
    from bench.data.indian_pines import load_source

    _, truth, _ = load_source(params["source"])
    rows, cols = np.nonzero(truth)
    expected = stratified_split(truth[rows, cols].astype(np.int64) - 1, FRACTIONS, params["split_seed"], "test")
    centres = np.stack([rows, cols], 1)
    for name, idx in expected.items():
        assert np.array_equal(prepared.arrays[name], centres[idx])
    assert prepared.extra["split"] == {"kind": "random"}
    digest = hashlib.sha256()  # of the split computed by the code before `split: blocks` existed (commit 2d86596)
    for name in ("train", "val", "test"):
        digest.update(np.ascontiguousarray(prepared.arrays[name].astype(np.int64)).tobytes())
        digest.update(prepared.labels[name].astype(np.int64).tobytes())
    assert digest.hexdigest() == "e9261574189e73388ee6e32ad893c3454a7f1cf28d1c260a70e4a2f66afb0301"


def test_indian_pines_blocks_split_keeps_patches_apart(real_params):
    from bench.data.indian_pines import prepare

    params = {**validate(copy.deepcopy(real_params))["prepare"]["indian_pines"], "split": "blocks"}
    prepared = prepare(params)
    radius = params["patch_size"] // 2
    train = prepared.arrays["train"]
    for other in ("val", "test"):  # Chebyshev distance between centres > 2r <=> the windows do not overlap
        gap = np.abs(train[:, None, :] - prepared.arrays[other][None, :, :]).max(-1).min()
        assert gap > 2 * radius, other
    info = prepared.extra["split"]
    assert info["kind"] == "blocks" and info["missing"]["test"] == []
    assert sum(len(v) for v in prepared.labels.values()) + info["dropped"] == 10249


@pytest.mark.parametrize("change,match", [({"split": "tiles"}, r"prepare\.indian_pines\.split = 'tiles'.*random \| blocks"),
                                          ({"split": "blocks", "block_size": 6}, r"prepare\.indian_pines\.block_size = 6"),
                                          ({"block_size": True}, r"prepare\.indian_pines\.block_size")])
def test_bad_split_settings_are_named(real_params, change, match):
    raw = copy.deepcopy(real_params)
    raw["prepare"]["indian_pines"].update(change)
    with pytest.raises(BenchError, match=match):
        validate(raw)
