"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the canonical python-version tarballs; torchvision is not used.

`prepare.<cifar>.source`: `download` (the authors' tarball into datasets/_downloads/, kept only when its SHA-256
matches), a path to that tarball or to its extracted folder, or `synthetic` (a small tarball written in the same
format from a seed by bench/data/cifar_synthetic.py, for smoke runs and CI: no CIFAR copy is needed). Every source
goes through one reader: pickles are read with an unpickler that allows numpy's array classes and nothing else
outside plain builtins, then their keys, dtypes, sizes and label ranges are checked. Validation = `val_size`
images carved stratified from the official training images; test = the official test images, untouched.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.base import DatasetSpec, PreparedSplits, register_dataset
from bench.data.sources import download, sha256_file, verify_file
from bench.data.splits import stratified_holdout
from bench.errors import BenchError

URL = "https://www.cs.toronto.edu/~kriz/"
DOWNLOAD_DIR = Path("datasets/_downloads")
SIDE, CHANNELS = 32, 3
PIXELS = CHANNELS * SIDE * SIDE  # one row of b"data": 1024 red, 1024 green, 1024 blue values, each row-major


@dataclass(frozen=True)
class Variant:
    """The layout and checksums of one canonical tarball. `sha256` and `md5` are the tarball's: md5 as the
    authors publish it (https://www.cs.toronto.edu/~kriz/cifar.html), sha256 as Keras' `cifar10/cifar100.load_data`
    and torchvision's prototype datasets pin it. `member_md5`: torchvision's published md5 of each extracted file
    (the only checksums available for an extracted folder). None of them was computed here: this project has no
    copy of CIFAR and no network to fetch one."""

    dataset: str
    tarball: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes  # the label list used (CIFAR-100: the 100 fine labels)
    other_keys: tuple[bytes, ...]  # further per-image keys that must be present (CIFAR-100: coarse labels)
    names_key: bytes  # the class names in the meta file
    num_classes: int
    sha256: str
    md5: str
    size: int  # bytes of the tarball
    member_md5: dict[str, str] = field(default_factory=dict)
    train_size: int = 50_000  # the official splits, the same for both variants
    test_size: int = 10_000

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


VARIANTS = {
    "cifar10": Variant(
        dataset="cifar10", tarball="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch", meta_file="batches.meta",
        label_key=b"labels", other_keys=(), names_key=b"label_names", num_classes=10,
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        md5="c58f30108f718f92721af3b95e74349a", size=170_498_071,
        member_md5={"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
                    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}),
    "cifar100": Variant(
        dataset="cifar100", tarball="cifar-100-python.tar.gz", folder="cifar-100-python",
        train_files=("train",), test_file="test", meta_file="meta",
        label_key=b"fine_labels", other_keys=(b"coarse_labels",), names_key=b"fine_label_names", num_classes=100,
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        md5="eb9058c3a382ffc7106e4002c42a8d85", size=169_001_437,
        member_md5={"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                    "meta": "7973b15100ade9c7d40fb424638fde48"}),
}
PREPARE_DEFAULTS = {"source": "download", "val_size": 5000, "split_seed": 0, "subset": None,
                    "synthetic_train": 1000, "synthetic_test": 200, "synthetic_seed": 0}
BATCH_KEYS = (b"data", b"filenames", b"batch_label")  # besides the labels, in every data file of both variants


def how_to_get(v: Variant) -> str:
    return (f"set prepare.{v.dataset}.source to `download` (needs the network), to a path to the canonical "
            f"{v.tarball} or to its extracted {v.folder} folder, or to `synthetic` (generated stand-in data)")


# --- reading -----------------------------------------------------------------------------------------------------

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array rebuilder, whatever module numpy keeps it in
SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as Python 2 / numpy 1 wrote it
                ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as numpy 2 writes it
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class CifarUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain builtins (dicts, lists, ints, byte strings) only: any other global a
    pickle names (os.system and the like) stops the load."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR pickle") from None


def unpickle(raw: bytes, where: str, fix: str) -> object:
    """Python 2 pickles: their `str` keys and values come back as bytes (encoding="bytes")."""
    try:
        return CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a truncated or foreign pickle raises several types
        message = str(exc).splitlines()[0] if str(exc) else "no message"
        raise BenchError(f"{where} is truncated or not a CIFAR pickle ({exc.__class__.__name__}: {message}); "
                         f"{fix}") from None


def tar_members(path: Path, v: Variant, fix: str) -> dict[str, tuple[str, bytes]]:
    """{file: (where, bytes)} of the variant's data and meta files inside a .tar.gz, read in memory (nothing is
    extracted to disk)."""
    out = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            found = {m.name: m for m in tar.getmembers()}  # reads the whole archive: a truncated one fails here
            for name in v.members:
                where = f"{path}:{v.folder}/{name}"
                member = found.get(f"{v.folder}/{name}")
                if member is None or not member.isfile():
                    raise BenchError(f"{path} has no file {v.folder}/{name}; {fix}")
                try:
                    raw = tar.extractfile(member).read()
                except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                    raise BenchError(f"{where} is truncated ({exc.__class__.__name__}); {fix}") from None
                if len(raw) != member.size:
                    raise BenchError(f"{where} is truncated ({len(raw)} of {member.size} bytes); {fix}")
                out[name] = (where, raw)
    except BenchError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        message = str(exc).splitlines()[0] if str(exc) else "no message"
        raise BenchError(f"{path} is truncated or not a .tar.gz ({exc.__class__.__name__}: {message}); {fix}") from None
    return out


def folder_members(folder: Path, v: Variant, fix: str) -> dict[str, tuple[str, bytes]]:
    """{file: (where, bytes)} of an extracted folder, each file checked against its published md5 first."""
    missing = [folder / name for name in v.members if not (folder / name).is_file()]
    if missing:
        raise BenchError(f"missing data file {missing[0]} ({len(missing)} of the {len(v.members)} files of "
                         f"{v.folder} missing); {fix}")
    for name in v.members:
        verify_file(folder / name, v.member_md5[name], fix, algorithm="md5")
    return {name: (str(folder / name), (folder / name).read_bytes()) for name in v.members}


def check_batch(obj: object, where: str, v: Variant, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """One data file's images (N×3×32×32 uint8) and labels (int64), after checking its keys, dtypes and sizes."""
    def bad(what: str) -> BenchError:
        return BenchError(f"{where} is not a {v.dataset} data file ({what}); {fix}")

    if not isinstance(obj, dict):
        raise bad(f"a {type(obj).__name__}, not a dict")
    missing = [key.decode() for key in (*BATCH_KEYS, v.label_key, *v.other_keys) if key not in obj]
    if missing:
        raise bad(f"no key {', '.join(missing)}")
    data = obj[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS):
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"data is {shape}, expected uint8 N×{PIXELS}")
    n = len(data)
    for key in (v.label_key, *v.other_keys, b"filenames"):
        if not isinstance(obj[key], list) or len(obj[key]) != n:
            raise bad(f"{key.decode()} is not a list of {n} entries, one per image")
    labels = obj[v.label_key]
    if not all(type(y) is int and 0 <= y < v.num_classes for y in labels):
        raise bad(f"{v.label_key.decode()} holds values outside the integers 0..{v.num_classes - 1}")
    return data.reshape(n, CHANNELS, SIDE, SIDE), np.array(labels, dtype=np.int64)


def check_meta(obj: object, where: str, v: Variant, fix: str) -> list[str]:
    names = obj.get(v.names_key) if isinstance(obj, dict) else None
    if not (isinstance(names, list) and len(names) == v.num_classes and all(isinstance(s, bytes) for s in names)):
        raise BenchError(f"{where} is not a {v.dataset} meta file (no {v.names_key.decode()} list of "
                         f"{v.num_classes} names); {fix}")
    return [s.decode("utf-8", "replace") for s in names]


def read_members(blobs: dict[str, tuple[str, bytes]], v: Variant, fix: str) -> dict:
    """Parse every file of the variant: {"train": (x, y), "test": (x, y), "class_names": [...]}."""
    parts = [check_batch(unpickle(blobs[name][1], blobs[name][0], fix), blobs[name][0], v, fix) for name in v.train_files]
    where, raw = blobs[v.test_file]
    return {"train": (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])),
            "test": check_batch(unpickle(raw, where, fix), where, v, fix),
            "class_names": check_meta(unpickle(blobs[v.meta_file][1], blobs[v.meta_file][0], fix),
                                      blobs[v.meta_file][0], v, fix)}


# --- the sources -------------------------------------------------------------------------------------------------

def verify_tarball(path: Path, v: Variant, fix: str) -> dict:
    return {"sha256": verify_file(path, v.sha256, fix), "md5": verify_file(path, v.md5, fix, algorithm="md5")}


def load_source(v: Variant, params: dict, fix: str) -> tuple[dict, dict, tuple[int, int]]:
    """(parsed files, sources record, expected (train, test) sizes) of `prepare.<cifar>.source`."""
    source = params["source"]
    if source == "synthetic":
        from bench.data.cifar_synthetic import write_synthetic

        sizes = (params["synthetic_train"], params["synthetic_test"])
        with tempfile.TemporaryDirectory(prefix="eebench-cifar-") as tmp:
            path = write_synthetic(Path(tmp) / v.tarball, v.dataset, *sizes, params["synthetic_seed"])
            record = {v.tarball: {"sha256": sha256_file(path)}}
            blobs = tar_members(path, v, fix)
        verified = ("nothing: synthetic stand-in data in the canonical format, generated from "
                    f"prepare.{v.dataset}.synthetic_seed (not CIFAR)")
        return read_members(blobs, v, fix), {"source": source, "synthetic": True, "files": record,
                                             "verified": verified}, sizes
    if source == "download":
        path = DOWNLOAD_DIR / v.dataset / v.tarball
        if not path.is_file():
            download(URL + v.tarball, path, v.sha256, fix)
        given = path
    else:
        given = Path(os.path.expanduser(source))
    sizes = (v.train_size, v.test_size)
    if given.is_dir():
        folder = given / v.folder if (given / v.folder).is_dir() else given
        blobs = folder_members(folder, v, fix)
        record = {name: {"sha256": sha256_file(folder / name), "md5": v.member_md5[name]} for name in v.members}
        return read_members(blobs, v, fix), {"source": source, "synthetic": False, "files": record,
                                             "verified": "md5 of each extracted file (torchvision's published values)"}, sizes
    if not given.is_file():
        raise BenchError(f"prepare.{v.dataset}.source = {source!r} is neither `download`, `synthetic`, nor an "
                         f"existing file or folder; {fix}")
    record = {v.tarball: verify_tarball(given, v, fix)}
    return read_members(tar_members(given, v, fix), v, fix), {
        "source": source, "synthetic": False, "files": record,
        "verified": "sha256 and md5 of the tarball (the authors' md5; the sha256 Keras and torchvision pin)"}, sizes


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation of uint8 N×C×H×W images scaled to [0, 1], exact
    from each channel's 256-bin histogram (no float copy of the images)."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        means.append(float(mean / 255.0))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()) / 255.0))
    return means, stds


def prepare(dataset: str, params: dict) -> PreparedSplits:
    v = VARIANTS[dataset]
    params = {**PREPARE_DEFAULTS, **params}
    fix = how_to_get(v)
    parsed, sources, (n_train, n_test) = load_source(v, params, fix)
    (train_x, train_y), (test_x, test_y) = parsed["train"], parsed["test"]
    if (len(train_y), len(test_y)) != (n_train, n_test):
        raise BenchError(f"{v.dataset} source {params['source']!r} holds {len(train_y)} training and {len(test_y)} "
                         f"test images, expected {n_train} and {n_test}; {fix}")
    val_size, top = params["val_size"], len(train_y) - len(np.unique(train_y))
    if not (isinstance(val_size, int) and 1 <= val_size <= top):
        raise BenchError(f"prepare.{dataset}.val_size = {val_size!r} is out of range; allowed: an integer in "
                         f"[1, {top}] (the {len(train_y)} training images less one per class)")
    val, train = stratified_holdout(train_y, val_size, params["split_seed"])
    mean, std = channel_stats(train_x[train])  # fitted on the training split only
    kind = "synthetic" if sources["synthetic"] else "official"
    return PreparedSplits(
        kind="images",
        arrays={"train": train_x[train], "val": train_x[val], "test": test_x},  # N, 3, 32, 32 uint8
        labels={"train": train_y[train], "val": train_y[val], "test": test_y},
        extra={"scale": 1 / 255.0, "mean": mean, "std": std, "synthetic": sources["synthetic"],
               "class_names": parsed["class_names"]},
        sources=sources,
        notes=(f"validation = {val_size} of the {len(train_y)} {kind} training images, stratified per class "
               f"(split_seed); test = the {len(test_y)} {kind} test images; per-channel mean/std from the "
               "training split" + ("; SYNTHETIC stand-in images in the canonical format, not CIFAR"
                                   if sources["synthetic"] else "")),
    )


def prepare_cifar10(params: dict) -> PreparedSplits:
    return prepare("cifar10", params)


def prepare_cifar100(params: dict) -> PreparedSplits:
    return prepare("cifar100", params)


for _name, _prepare in (("cifar10", prepare_cifar10), ("cifar100", prepare_cifar100)):
    register_dataset(DatasetSpec(
        name=_name,
        num_classes=VARIANTS[_name].num_classes,
        prepare=_prepare,
        prepare_defaults=dict(PREPARE_DEFAULTS),
        augment="crop_flip",
        input_shape=lambda prepare: (CHANNELS, SIDE, SIDE),
    ))
