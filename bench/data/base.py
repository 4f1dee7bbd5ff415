"""Dataset registry, the prepared on-disk format, and in-memory splits that serve whole batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.splits import stratified_subset
from bench.errors import BenchError
from bench.io import read_json, save_torch, write_json
from bench.registry import Registry

SPLITS = ("train", "val", "test")


@dataclass
class PreparedSplits:
    """What a dataset's `prepare` returns. kind "images": arrays[split] is N×C×H×W. kind "patches":
    arrays[split] is N×2 (row, col) centres into shared["cube"] (C×H×W), cut out on the fly."""

    kind: str
    arrays: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    extra: dict
    sources: dict
    notes: str
    shared: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    prepare: Callable[[dict], PreparedSplits]
    prepare_defaults: dict
    augment: str


DATASETS: Registry[DatasetSpec] = Registry("dataset", discover=lambda: __import__("bench.data.catalog"))


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name)(spec)


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def payload_digest(payload: dict) -> str:
    """SHA-256 of the prepared tensors' content (torch.save files differ byte-wise between identical saves)."""
    digest = hashlib.sha256()
    for group in ("arrays", "labels", "shared"):
        for key in sorted(payload[group]):
            tensor = payload[group][key].contiguous()
            digest.update(f"{group}/{key}/{tensor.dtype}/{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def prepare_dataset(name: str, params: dict, root: Path) -> dict:
    """Run the dataset's `prepare`, take the configured subsets, and write data.pt + manifest.json."""
    spec = get_dataset(name)
    prepared = spec.prepare(params)
    subset = params.get("subset") or {}
    for split, size in subset.items():
        keep = stratified_subset(prepared.labels[split], int(size), params["split_seed"])
        prepared.arrays[split] = prepared.arrays[split][keep]
        prepared.labels[split] = prepared.labels[split][keep]
    out = root / name
    payload = {
        "kind": prepared.kind,
        "arrays": {s: torch.from_numpy(np.array(prepared.arrays[s], copy=True)) for s in SPLITS},
        "labels": {s: torch.from_numpy(prepared.labels[s].astype(np.int64)) for s in SPLITS},
        "shared": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in prepared.shared.items()},
    }
    save_torch(out / "data.pt", payload)
    manifest = {
        "dataset": name,
        "kind": prepared.kind,
        "num_classes": spec.num_classes,
        "params": params,
        "sizes": {s: int(len(prepared.labels[s])) for s in SPLITS},
        "class_counts": {s: np.bincount(prepared.labels[s], minlength=spec.num_classes).tolist() for s in SPLITS},
        "stored_shapes": {s: list(prepared.arrays[s].shape) for s in SPLITS},
        "extra": prepared.extra,
        "sources": prepared.sources,
        "notes": prepared.notes,
        "data_sha256": payload_digest(payload),  # content checksum, verified by every later stage
    }
    write_json(out / "manifest.json", manifest)
    return manifest


class Split:
    """One split held in memory; `batch(idx)` returns model-ready float inputs for those rows."""

    def __init__(self, kind: str, array: torch.Tensor, labels: torch.Tensor, extra: dict, shared: dict):
        self.kind, self.array, self.labels, self.extra = kind, array, labels, extra
        if kind == "images":
            c = array.shape[1]
            self.mean = torch.tensor(extra["mean"], dtype=torch.float32).view(1, c, 1, 1)
            self.std = torch.tensor(extra["std"], dtype=torch.float32).view(1, c, 1, 1)
        elif kind == "patches":
            r = extra["patch_size"] // 2
            self.cube = F.pad(shared["cube"][None], (r, r, r, r), mode="reflect")[0]
            offsets = torch.arange(-r, r + 1)
            self.rows = offsets.view(1, -1, 1) + r
            self.cols = offsets.view(1, 1, -1) + r
        else:
            raise BenchError(f"unknown prepared kind {kind!r}; re-run `eebench prepare`")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        if self.kind == "images":
            x = self.array[idx].to(torch.float32) * self.extra.get("scale", 1.0)
            return (x - self.mean) / self.std
        centres = self.array[idx]
        rows = centres[:, 0].view(-1, 1, 1) + self.rows
        cols = centres[:, 1].view(-1, 1, 1) + self.cols
        return self.cube[:, rows, cols].permute(1, 0, 2, 3).contiguous()  # N, bands, p, p


@dataclass
class PreparedDataset:
    name: str
    manifest: dict
    splits: dict[str, Split]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]


def load_prepared(name: str, root: Path) -> PreparedDataset:
    folder = root / name
    manifest_path, data_path = folder / "manifest.json", folder / "data.pt"
    how = f"run `eebench prepare --dataset {name}` (or `dvc repro prepare@{name}`)"
    if not manifest_path.is_file() or not data_path.is_file():
        raise BenchError(f"prepared dataset {folder} is missing; {how}")
    manifest = read_json(manifest_path)
    try:
        payload = torch.load(data_path, weights_only=True)
    except Exception:  # a damaged zip raises several types
        raise BenchError(f"prepared file {data_path} is corrupt; {how}") from None
    if payload_digest(payload) != manifest["data_sha256"]:
        raise BenchError(f"prepared file {data_path} does not match its manifest checksum; {how}")
    splits = {s: Split(payload["kind"], payload["arrays"][s], payload["labels"][s], manifest["extra"], payload["shared"])
              for s in SPLITS}
    return PreparedDataset(name, manifest, splits)
