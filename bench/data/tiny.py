"""A tiny synthetic image dataset (generated from a seed, no files) for smoke runs and tests.

Each class has a fixed random 8×8 template; samples are the template at a random contrast plus noise,
so shallow exits learn the easy samples and the hard (low-contrast) ones need depth.
"""

from __future__ import annotations

import numpy as np

from bench.data.base import DatasetSpec, PreparedSplits, register_dataset


def prepare(params: dict) -> PreparedSplits:
    rng = np.random.default_rng(params["split_seed"])
    k = 4
    templates = rng.normal(size=(k, 1, 8, 8))
    arrays, labels = {}, {}
    for split in ("train", "val", "test"):
        n = params[f"n_{split}"]
        y = np.arange(n) % k
        contrast = rng.uniform(0.2, 1.5, size=(n, 1, 1, 1))
        x = templates[y] * contrast + rng.normal(scale=params["noise"], size=(n, 1, 8, 8))
        arrays[split], labels[split] = x.astype(np.float32), y
    return PreparedSplits(
        kind="images", arrays=arrays, labels=labels,
        extra={"scale": 1.0, "mean": [0.0], "std": [1.0]},
        sources={"generator": "numpy default_rng", "seed": params["split_seed"]},
        notes="synthetic; classes balanced by construction",
    )


register_dataset(DatasetSpec(
    name="tiny",
    num_classes=4,
    prepare=prepare,
    prepare_defaults={"n_train": 512, "n_val": 128, "n_test": 128, "noise": 1.0,
                      "split_seed": 0, "subset": None},
    augment="none",
    input_shape=lambda prepare: (1, 8, 8),
))
