"""prepare: raw sources → verified, split tensors plus a manifest under datasets/."""

from bench.data.base import DATASETS, PreparedDataset, get_dataset, load_prepared, prepare_dataset

__all__ = ["DATASETS", "PreparedDataset", "get_dataset", "load_prepared", "prepare_dataset"]
