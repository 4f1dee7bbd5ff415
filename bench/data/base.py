"""Dataset registry, the prepared on-disk format, and in-memory splits that serve whole batches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.splits import stratified_subset
from bench.errors import BenchError
from bench.io import load_torch, read_json, save_torch, write_json
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
    # one sample's shape (channels, height, width) as the model sees it, from the resolved prepare params;
    # the cost tables count FLOPs on it and config validation checks the model accepts it
    input_shape: Callable[[dict], tuple[int, int, int]]


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


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of a manifest's content without its own checksum field, as it reads back from JSON (so the
    digest computed at prepare time and the one of the loaded file agree)."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(json.loads(json.dumps(content, sort_keys=True)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    manifest["manifest_sha256"] = manifest_digest(manifest)  # the metadata (mean, num_classes…) is verified too
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

    def to(self, device: torch.device | str) -> "Split":
        """Hold the inputs on `device`, so that batches are cut out there; labels stay on the CPU (predictions
        are scored there). On the CPU this changes nothing."""
        self.array = self.array.to(device)
        if self.kind == "images":
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        else:
            self.cube, self.rows, self.cols = self.cube.to(device), self.rows.to(device), self.cols.to(device)
        return self

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.array.device)
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


def prepare_fix(name: str) -> str:
    return f"run `eebench prepare --dataset {name}` (or `dvc repro -f prepare@{name}`)"


MANIFEST_KEYS = ("dataset", "kind", "num_classes", "sizes", "class_counts", "stored_shapes", "extra", "data_sha256",
                 "manifest_sha256")


def finite_list(values: object, length: int, positive: bool = False) -> bool:
    return (isinstance(values, list) and len(values) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and (v > 0 or not positive)
                    for v in values))


def verify_manifest(name: str, manifest: object, payload: object, path: Path) -> None:
    """Check the whole manifest against itself (its checksum written at prepare time) and against the data
    (everything that can be recomputed from the arrays); any mismatch is a one-line BenchError."""
    how = prepare_fix(name)

    def bad(what: str) -> BenchError:
        return BenchError(f"prepared metadata {path} is wrong ({what}); {how}")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise bad("its content does not match the checksum written when it was prepared: it was edited or damaged")
    if not isinstance(payload, dict) or not all(isinstance(payload.get(g), dict) for g in ("arrays", "labels", "shared")) \
            or not all(s in payload["arrays"] and s in payload["labels"] for s in SPLITS):
        raise BenchError(f"prepared file {path.parent / 'data.pt'} does not hold the prepared splits; {how}")
    if payload_digest(payload) != manifest["data_sha256"]:
        raise BenchError(f"prepared file {path.parent / 'data.pt'} does not match its manifest checksum; {how}")
    spec = get_dataset(name)
    if manifest["dataset"] != name:
        raise bad(f"dataset {manifest['dataset']!r}, expected {name!r}")
    if manifest["kind"] != payload.get("kind"):
        raise bad(f"kind {manifest['kind']!r} but data.pt holds {payload.get('kind')!r}")
    if manifest["num_classes"] != spec.num_classes:
        raise bad(f"num_classes {manifest['num_classes']!r}, but dataset {name} has {spec.num_classes} classes")
    for split in SPLITS:
        labels, array = payload["labels"][split], payload["arrays"][split]
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < spec.num_classes):
            raise bad(f"{split} labels outside 0..{spec.num_classes - 1}")
        if manifest["sizes"].get(split) != len(labels) or len(array) != len(labels):
            raise bad(f"sizes.{split} {manifest['sizes'].get(split)!r}, but data.pt holds {len(labels)} labels "
                      f"and {len(array)} samples")
        counts = np.bincount(labels.numpy(), minlength=spec.num_classes).tolist()
        if manifest["class_counts"].get(split) != counts:
            raise bad(f"class_counts.{split} differs from the labels' counts {counts}")
        if manifest["stored_shapes"].get(split) != list(array.shape):
            raise bad(f"stored_shapes.{split} {manifest['stored_shapes'].get(split)!r}, data.pt holds {list(array.shape)}")
    extra = manifest["extra"]
    if manifest["kind"] == "images":
        channels = payload["arrays"]["train"].shape[1]
        for key, positive in (("mean", False), ("std", True)):
            if not finite_list(extra.get(key), channels, positive):
                raise bad(f"extra.{key} {extra.get(key)!r} is not {channels} finite{' positive' if positive else ''} "
                          "number(s)")
    elif manifest["kind"] == "patches":
        bands = payload["shared"]["cube"].shape[0] if "cube" in payload["shared"] else -1
        for key, positive in (("band_mean", False), ("band_std", True)):
            if not finite_list(extra.get(key), bands, positive):
                raise bad(f"extra.{key} is not {bands} finite{' positive' if positive else ''} numbers")
        size = extra.get("patch_size")
        if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
            raise bad(f"extra.patch_size {size!r} is not an odd integer >= 1")


def require_prepared(name: str, root: Path) -> tuple[Path, Path]:
    """(manifest.json, data.pt) of the prepared dataset `name` under `root`; a one-line error naming the fix when
    either is missing (the train command checks this before any executor starts)."""
    folder = root / name
    manifest_path, data_path = folder / "manifest.json", folder / "data.pt"
    if not manifest_path.is_file() or not data_path.is_file():
        raise BenchError(f"prepared dataset {folder} is missing; {prepare_fix(name)}")
    return manifest_path, data_path


def load_prepared(name: str, root: Path) -> PreparedDataset:
    manifest_path, data_path = require_prepared(name, root)
    how = prepare_fix(name)
    manifest = read_json(manifest_path, how)
    payload = load_torch(data_path, how)
    verify_manifest(name, manifest, payload, manifest_path)
    splits = {s: Split(payload["kind"], payload["arrays"][s], payload["labels"][s], manifest["extra"], payload["shared"])
              for s in SPLITS}
    return PreparedDataset(name, manifest, splits)
