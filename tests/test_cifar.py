"""CIFAR-10/100: tiny tarballs and folders in the canonical python-version format go through `eebench prepare`
(the real CLI path) and come out split, labelled and normalised as the format says; damaged sources are
one-line errors naming the file and the fix, with nothing written. The references here read the pickles
with plain `pickle` and compute statistics with plain numpy, independently of bench/data/cifar.py."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import cifar, get_dataset, load_prepared
from bench.data.cifar_synthetic import synthetic_members, write_folder, write_synthetic, write_tarball
from bench.data.splits import stratified_holdout
from bench.train.augment import AUGMENTATIONS
from tests.conftest import write_params

SIZES = {"cifar10": (60, 20), "cifar100": (300, 100)}  # (train, test): 6 and 3 training images per class
VAL = {"cifar10": 20, "cifar100": 100}  # 2 and 1 per class


def digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def trust(monkeypatch, dataset: str, members: dict, tarball=None) -> None:
    """Make the tiny copy the canonical one: its checksums and sizes replace the published ones, so that it
    passes verification exactly as the real tarball would."""
    v = cifar.VARIANTS[dataset]
    changes = {"member_md5": {name: digest(data, "md5") for name, data in members.items()},
               "train_size": SIZES[dataset][0], "test_size": SIZES[dataset][1]}
    if tarball is not None:
        raw = tarball.read_bytes()
        changes.update(sha256=digest(raw, "sha256"), md5=digest(raw, "md5"))
    monkeypatch.setitem(cifar.VARIANTS, dataset, dataclasses.replace(v, **changes))


def prepare(in_tmp, tiny_params, capsys, dataset: str, **section):
    params = {**tiny_params, "prepare": {**tiny_params["prepare"], dataset: {"val_size": VAL[dataset], **section}}}
    write_params(in_tmp, params)
    code = main(["prepare", "--dataset", dataset])
    return code, capsys.readouterr().err.strip()


def reference(members: dict, dataset: str) -> dict:
    """The official splits read with plain pickle, as the CIFAR page tells Python 3 users to."""
    v = cifar.VARIANTS[dataset]
    key = b"fine_labels" if dataset == "cifar100" else b"labels"
    train = [pickle.loads(members[name], encoding="bytes") for name in v.train_files]
    test = pickle.loads(members[v.test_file], encoding="bytes")
    return {"train_x": np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32),
            "train_y": np.concatenate([b[key] for b in train]),
            "test_x": test[b"data"].reshape(-1, 3, 32, 32), "test_y": np.array(test[key]),
            "test_coarse": np.array(test.get(b"coarse_labels", []))}


def rows(x: np.ndarray) -> list[bytes]:
    return sorted(bytes(r) for r in x.reshape(len(x), -1))


@pytest.mark.parametrize("dataset,form", [("cifar10", "tarball"), ("cifar100", "folder")])
def test_prepare_reads_the_canonical_format(in_tmp, tiny_params, capsys, monkeypatch, dataset, form):
    members = synthetic_members(dataset, *SIZES[dataset], seed=3)
    if form == "tarball":
        source = write_tarball(in_tmp / "given" / cifar.VARIANTS[dataset].tarball, dataset, members)
        trust(monkeypatch, dataset, members, source)
    else:
        source = write_folder(in_tmp / "given", dataset, members).parent  # the folder that holds the extracted one
        trust(monkeypatch, dataset, members)
    code, err = prepare(in_tmp, tiny_params, capsys, dataset, source=str(source), split_seed=5)
    assert code == 0, err
    data = load_prepared(dataset, in_tmp / "datasets")
    split = {s: (data.splits[s].array.numpy(), data.splits[s].labels.numpy()) for s in ("train", "val", "test")}
    ref = reference(members, dataset)
    k = cifar.VARIANTS[dataset].num_classes
    # the official test split, untouched and in order; CIFAR-100 labels are the fine ones
    assert np.array_equal(split["test"][0], ref["test_x"]) and np.array_equal(split["test"][1], ref["test_y"])
    if dataset == "cifar100":
        assert set(split["test"][1]) == set(range(100)) and not np.array_equal(split["test"][1], ref["test_coarse"])
    # validation: exactly val_size, stratified (balanced classes: the same count per class), carved from train
    assert len(split["val"][1]) == VAL[dataset]
    assert np.bincount(split["val"][1], minlength=k).tolist() == [VAL[dataset] // k] * k
    assert rows(np.concatenate([split["train"][0], split["val"][0]])) == rows(ref["train_x"])
    for s in ("train", "val"):  # every image keeps its own label
        index = {bytes(r): y for r, y in zip(ref["train_x"].reshape(len(ref["train_x"]), -1), ref["train_y"])}
        assert [index[bytes(r)] for r in split[s][0].reshape(len(split[s][0]), -1)] == split[s][1].tolist()
    # per-channel normalisation from the training split only
    train = split["train"][0].astype(np.float64) / 255.0
    extra = data.manifest["extra"]
    assert extra["scale"] == 1 / 255.0 and extra["synthetic"] is False
    np.testing.assert_allclose(extra["mean"], train.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(extra["std"], train.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    everything = ref["train_x"].astype(np.float64) / 255.0
    assert np.abs(np.array(extra["mean"]) - everything.mean(axis=(0, 2, 3))).max() > 1e-6  # validation left out
    batch = data.splits["train"].batch(torch.arange(len(split["train"][1])))
    np.testing.assert_allclose(batch.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    assert get_dataset(dataset).augment == "crop_flip"
    assert tuple(batch.shape[1:]) == tuple(get_dataset(dataset).input_shape(data.manifest["params"]))


def test_synthetic_source_is_the_canonical_format_read_back(in_tmp, tiny_params, capsys):
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar10", source="synthetic", synthetic_train=120,
                        synthetic_test=40, synthetic_seed=7)
    assert code == 0, err
    data = load_prepared("cifar10", in_tmp / "datasets")
    assert data.manifest["extra"]["synthetic"] is True and data.manifest["sources"]["synthetic"] is True
    assert "SYNTHETIC" in data.manifest["notes"]
    ref = reference(synthetic_members("cifar10", 120, 40, seed=7), "cifar10")
    assert np.array_equal(data.splits["test"].array.numpy(), ref["test_x"])
    assert data.manifest["sizes"] == {"train": 100, "val": 20, "test": 40}
    written = write_synthetic(in_tmp / "again.tar.gz", "cifar10", 120, 40, 7)  # byte-identical from the seed
    assert data.manifest["sources"]["files"]["cifar-10-python.tar.gz"]["sha256"] == digest(written.read_bytes(), "sha256")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_synthetic_pickles_have_the_canonical_keys_dtypes_and_opcodes(dataset):
    v = cifar.VARIANTS[dataset]
    members = synthetic_members(dataset, 20 if dataset == "cifar10" else 200, 10, seed=0)
    assert set(members) == {*v.train_files, v.test_file, v.meta_file}
    keys = {b"data", b"filenames", b"batch_label", *([b"fine_labels", b"coarse_labels"] if dataset == "cifar100"
                                                      else [b"labels"])}
    for name in (*v.train_files, v.test_file):
        batch = pickle.loads(members[name], encoding="bytes")
        assert set(batch) == keys and batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
        assert isinstance(batch[b"batch_label"], bytes) and all(isinstance(f, bytes) for f in batch[b"filenames"])
        ops = list(pickletools.genops(members[name]))
        assert ops[0][0].name == "PROTO" and ops[0][1] == 2  # Python 2's protocol, its str opcodes, numpy 1's names
        assert {op.name for op, _, _ in ops} & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"} == set()
        assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {"numpy.core.multiarray _reconstruct",
                                                                     "numpy ndarray", "numpy dtype"}
    meta = pickle.loads(members[v.meta_file], encoding="bytes")
    assert len(meta[v.names_key]) == v.num_classes


# --- bad input ---------------------------------------------------------------------------------------------------

def assert_refused(in_tmp, code, err, dataset, *fragments):
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in (*fragments, f"prepare.{dataset}.source"):
        assert fragment in err, (fragment, err)
    assert not (in_tmp / "datasets" / dataset).exists()


def test_a_tarball_with_the_wrong_checksum_is_refused(in_tmp, tiny_params, capsys):
    path = write_synthetic(in_tmp / "cifar-10-python.tar.gz", "cifar10", 60, 20, 0)  # not the authors' bytes
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar10", source=str(path))
    assert_refused(in_tmp, code, err, "cifar10", f"corrupt data file {path}", "sha256", "6d958be07457")


def test_an_extracted_file_with_the_wrong_checksum_is_refused(in_tmp, tiny_params, capsys):
    folder = write_folder(in_tmp, "cifar100", synthetic_members("cifar100", 300, 100, 0))
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar100", source=str(folder))
    assert_refused(in_tmp, code, err, "cifar100", f"corrupt data file {folder / 'train'}", "md5", "16019d7e3df5")


def test_a_truncated_tarball_is_refused(in_tmp, tiny_params, capsys, monkeypatch):
    members = synthetic_members("cifar10", *SIZES["cifar10"], seed=0)
    path = write_tarball(in_tmp / "cifar-10-python.tar.gz", "cifar10", members)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    trust(monkeypatch, "cifar10", members, path)  # its checksum passes: the reader itself must notice
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar10", source=str(path))
    assert_refused(in_tmp, code, err, "cifar10", str(path), "truncated")


@pytest.mark.parametrize("form", ["tarball", "folder"])
def test_a_truncated_member_is_refused(in_tmp, tiny_params, capsys, monkeypatch, form):
    members = synthetic_members("cifar100", *SIZES["cifar100"], seed=0)
    members["train"] = members["train"][: len(members["train"]) - 1000]
    if form == "tarball":
        path = write_tarball(in_tmp / "cifar-100-python.tar.gz", "cifar100", members)
        trust(monkeypatch, "cifar100", members, path)
        where = f"{path}:cifar-100-python/train"
    else:
        path = write_folder(in_tmp, "cifar100", members)
        trust(monkeypatch, "cifar100", members)
        where = str(path / "train")
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar100", source=str(path))
    assert_refused(in_tmp, code, err, "cifar100", f"{where} is truncated or not a CIFAR pickle")


def test_a_pickle_missing_a_key_is_refused(in_tmp, tiny_params, capsys, monkeypatch):
    from bench.data.cifar_synthetic import py2_pickle

    members = synthetic_members("cifar100", *SIZES["cifar100"], seed=0)
    test = pickle.loads(members["test"], encoding="bytes")
    del test[b"fine_labels"]
    members["test"] = py2_pickle(test)
    path = write_tarball(in_tmp / "cifar-100-python.tar.gz", "cifar100", members)
    trust(monkeypatch, "cifar100", members, path)
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar100", source=str(path))
    assert_refused(in_tmp, code, err, "cifar100", f"{path}:cifar-100-python/test is not a cifar100 data file",
                   "no key fine_labels")


def test_a_pickle_naming_another_global_is_refused():
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(Exception, match="global .*system is not allowed in a CIFAR pickle"):
        cifar.unpickle(pickle.dumps({b"data": Payload()}), "member", "fix")


def test_a_folder_missing_a_batch_file_is_refused(in_tmp, tiny_params, capsys):
    members = synthetic_members("cifar10", *SIZES["cifar10"], seed=0)
    del members["data_batch_5"]
    folder = write_folder(in_tmp, "cifar10", members)
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar10", source=str(in_tmp))
    assert_refused(in_tmp, code, err, "cifar10", f"missing data file {folder / 'data_batch_5'}")


@pytest.mark.parametrize("section,allowed", [
    ({"val_size": 0}, "an integer in [1, 49990]"),
    ({"val_size": 49991}, "an integer in [1, 49990]"),
    ({"source": "synthetic", "synthetic_train": 100, "val_size": 91}, "an integer in [1, 90]"),
])
def test_val_size_out_of_range_is_refused(in_tmp, tiny_params, capsys, section, allowed):
    code, err = prepare(in_tmp, tiny_params, capsys, "cifar10", **section)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"prepare.cifar10.val_size = {section['val_size']} is out of range" in err and allowed in err
    assert not (in_tmp / "datasets").exists()


# --- the pieces --------------------------------------------------------------------------------------------------

def test_stratified_holdout_takes_exact_proportional_counts():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    for count in (1, 7, 33, 90):
        held, rest = stratified_holdout(labels, count, seed=1)
        assert len(held) == count and np.intersect1d(held, rest).size == 0 and len(held) + len(rest) == 100
        got = np.bincount(labels[held], minlength=4)
        quota = count * np.array([50, 30, 15, 5]) / 100
        assert np.all(np.abs(got - quota) < 1) and np.all(np.bincount(labels[rest], minlength=4) >= 1)
    held, rest = stratified_holdout(labels, 96, seed=1)  # the most there is: one of each class stays
    assert np.bincount(labels[rest], minlength=4).tolist() == [1, 1, 1, 1]
    again = stratified_holdout(labels, 33, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, stratified_holdout(labels, 33, seed=1)))
    assert not np.array_equal(again[0], stratified_holdout(labels, 33, seed=2)[0])
    with pytest.raises(ValueError):
        stratified_holdout(labels, 97, seed=0)  # 100 samples, 4 classes: at most 96


def crop_flip_reference(x: torch.Tensor, seed: int, padding: int = 4) -> torch.Tensor:
    """One sample at a time: pad, cut the 32×32 window at the drawn offsets, flip when drawn."""
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = []
    for i in range(n):
        padded = torch.zeros(x.shape[1], x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
        padded[:, padding:padding + x.shape[2], padding:padding + x.shape[3]] = x[i]
        crop = padded[:, dy[i]:dy[i] + x.shape[2], dx[i]:dx[i] + x.shape[3]]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


def test_crop_flip_matches_a_per_sample_reference():
    x = torch.randn(64, 3, 32, 32)
    got = AUGMENTATIONS.get("crop_flip")(x, torch.Generator().manual_seed(11))
    assert torch.equal(got, crop_flip_reference(x, 11))
    # the draws cover every offset of the 40×40 padded image and both flips, so the test sees them all
    gen = torch.Generator().manual_seed(11)
    assert set(torch.randint(0, 9, (64,), generator=gen).tolist()) == set(range(9))
    assert (got == 0).any() and not (x == 0).any()  # the padding's zeros appear where a crop reaches the border
