"""Fashion-MNIST (Xiao et al. 2017) from its four idx files; torchvision is not used (see README)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from bench.data.base import DatasetSpec, PreparedSplits, register_dataset
from bench.data.sources import download, verify_file
from bench.data.splits import stratified_split
from bench.errors import BenchError

FILES = {  # canonical files (identical to Debian's dataset-fashion-mnist) and their sha256
    "train_images": ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "EEBENCH_FASHION_MNIST_DIR"
DOWNLOAD_DIR = Path("datasets/_downloads/fashion_mnist")
HOW_TO_GET = (f"install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set {ENV_DIR} "
              "to a folder holding the four canonical idx .gz files")


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped idx file (big-endian header: magic, dims; then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise BenchError(f"{path} is not a uint8 idx file; {HOW_TO_GET}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise BenchError(f"{path} is truncated ({data.size} values for shape {shape}); {HOW_TO_GET}")
    return data.reshape(shape)


def locate_files() -> dict[str, Path]:
    """The first complete source among: $EEBENCH_FASHION_MNIST_DIR, the Debian package, a verified download."""
    if os.environ.get(ENV_DIR):
        folder = Path(os.environ[ENV_DIR])
    elif all((DEBIAN_DIR / name).is_file() for name, _ in FILES.values()):
        folder = DEBIAN_DIR
    else:
        folder = DOWNLOAD_DIR
        for name, sha in FILES.values():
            if not (folder / name).is_file():
                download(URL + name, folder / name, sha, HOW_TO_GET)
    return {key: folder / name for key, (name, _) in FILES.items()}


def prepare(params: dict) -> PreparedSplits:
    paths = locate_files()
    checksums = {paths[k].name: verify_file(paths[k], sha, HOW_TO_GET) for k, (_, sha) in FILES.items()}
    train_x, train_y = read_idx(paths["train_images"]), read_idx(paths["train_labels"])
    test_x, test_y = read_idx(paths["test_images"]), read_idx(paths["test_labels"])
    split = stratified_split(train_y, {"val": params["val_fraction"]}, params["split_seed"], rest="train")
    images = {"train": train_x[split["train"]], "val": train_x[split["val"]], "test": test_x}
    labels = {"train": train_y[split["train"]], "val": train_y[split["val"]], "test": test_y}
    train = images["train"].astype(np.float64) / 255.0
    return PreparedSplits(
        kind="images",
        arrays={s: images[s][:, None, :, :] for s in images},  # N, 1, 28, 28 uint8
        labels=labels,
        extra={"scale": 1 / 255.0, "mean": [float(train.mean())], "std": [float(train.std())]},
        sources={"files": checksums, "location": str(paths["train_images"].parent)},
        notes="validation = stratified val_fraction of the official training set; test = official test set",
    )


register_dataset(DatasetSpec(
    name="fashion_mnist",
    num_classes=10,
    prepare=prepare,
    prepare_defaults={"val_fraction": 0.1, "split_seed": 0, "subset": None},
    augment="translate_flip",
    input_shape=lambda prepare: (1, 28, 28),
))
