"""Synthetic CIFAR-10/100 stand-ins written in the canonical python-version format, from a seed.

The tarball has the canonical member names (`cifar-10-batches-py/data_batch_1`…, `cifar-100-python/train`…)
and each member is a protocol-2 pickle as Python 2's cPickle wrote the originals: a dict with byte-string
keys (b"data" uint8 N×3072, b"labels" or b"fine_labels" + b"coarse_labels", b"filenames", b"batch_label"),
numpy arrays under numpy 1's module names. `prepare.<cifar>.source: synthetic` reads it back through the
same reader as a real tarball; tests use the pieces to write damaged copies.

Images: each class has a fixed random 4×4 colour layout (blocks of 8×8 pixels); an image is its class's
layout at a random contrast and brightness plus pixel noise, so a small network can learn the classes.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from bench.data.cifar import CHANNELS, PIXELS, SIDE, VARIANTS, Variant
from bench.io import atomic_path

GLOBALS = {np.zeros(0).__reduce__()[0]: ("numpy.core.multiarray", "_reconstruct"), np.ndarray: ("numpy", "ndarray"),
           np.dtype: ("numpy", "dtype")}  # the only globals in the canonical pickles


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 writes it: byte strings as py2 `str` (SHORT_BINSTRING / BINSTRING, read back as
    bytes with encoding="bytes", not Python 3's `_codecs.encode` call), numpy globals under numpy 1's names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_py2_text(self, obj: str) -> None:  # Python 2's str: the dtype codes numpy writes ('u1', '|')
        self.save_py2_str(obj.encode("ascii"))

    dispatch[str] = save_py2_text

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, np.dtype):  # numpy 1 wrote dtype('u1') as dtype('u1', 0, 1), numpy 2 as ('u1', False, True)
            cls, (code, align, copy), state = obj.__reduce__()
            return cls, (code, int(align), int(copy)), state
        return NotImplemented

    def save_global(self, obj: object, name: str | None = None) -> None:
        module, qualname = GLOBALS[obj]  # anything else has no place in a CIFAR pickle
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def synthetic_images(labels: np.ndarray, layouts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 N×3072 rows (channel-major, as b"data" stores them) of the classes' layouts with noise."""
    n = len(labels)
    block = SIDE // layouts.shape[-1]
    base = layouts[labels].astype(np.float32).repeat(block, axis=2).repeat(block, axis=3)  # N, 3, 32, 32 in [0, 255]
    contrast = rng.uniform(0.4, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-30.0, 30.0, size=(n, 1, 1, 1)).astype(np.float32)
    images = 128.0 + (base - 128.0) * contrast + brightness + 40.0 * rng.standard_normal(base.shape, dtype=np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(n, PIXELS)


def batch_dict(v: Variant, data: np.ndarray, labels: np.ndarray, batch_label: bytes, first: int) -> dict:
    out = {b"batch_label": batch_label, v.label_key: [int(y) for y in labels], b"data": data,
           b"filenames": [b"synthetic_%06d.png" % (first + i) for i in range(len(labels))]}
    if b"coarse_labels" in v.other_keys:  # CIFAR-100's 20 superclasses: here 5 consecutive fine classes each
        out[b"coarse_labels"] = [int(y) // 5 for y in labels]
    return out


def synthetic_members(dataset: str, n_train: int, n_test: int, seed: int) -> dict[str, bytes]:
    """{file name inside the variant's folder: pickled bytes} of a synthetic copy: balanced classes, the
    training images spread over the variant's training files as evenly as they go."""
    v = VARIANTS[dataset]
    rng = np.random.default_rng(seed)
    layouts = rng.uniform(0.0, 255.0, size=(v.num_classes, CHANNELS, 4, 4))
    members: dict[str, bytes] = {}
    train_y = rng.permutation(np.arange(n_train) % v.num_classes)
    train_x = synthetic_images(train_y, layouts, rng)
    parts = np.array_split(np.arange(n_train), len(v.train_files))
    for i, (name, idx) in enumerate(zip(v.train_files, parts)):
        label = b"training batch %d of %d" % (i + 1, len(v.train_files))
        members[name] = py2_pickle(batch_dict(v, train_x[idx], train_y[idx], label, int(idx[0]) if len(idx) else 0))
    test_y = rng.permutation(np.arange(n_test) % v.num_classes)
    members[v.test_file] = py2_pickle(batch_dict(v, synthetic_images(test_y, layouts, rng), test_y,
                                                 b"testing batch 1 of 1", n_train))
    names = [b"synthetic_class_%02d" % c for c in range(v.num_classes)]
    if dataset == "cifar10":
        meta = {b"num_cases_per_batch": len(parts[0]), v.names_key: names, b"num_vis": PIXELS}
    else:
        meta = {v.names_key: names, b"coarse_label_names": [b"synthetic_superclass_%02d" % c
                                                            for c in range(v.num_classes // 5)]}
    members[v.meta_file] = py2_pickle(meta)
    return members


def write_tarball(path: str | Path, dataset: str, members: dict[str, bytes]) -> Path:
    """A .tar.gz holding `members` under the variant's folder, byte-identical for identical members (zero
    timestamps and owners), written atomically."""
    v = VARIANTS[dataset]
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo(v.folder)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{v.folder}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return path


def write_folder(root: str | Path, dataset: str, members: dict[str, bytes]) -> Path:
    """The extracted form: `root/<variant folder>/<file>`; returns the variant folder."""
    folder = Path(root) / VARIANTS[dataset].folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
    return folder


def write_synthetic(path: str | Path, dataset: str, n_train: int, n_test: int, seed: int) -> Path:
    return write_tarball(path, dataset, synthetic_members(dataset, n_train, n_test, seed))
