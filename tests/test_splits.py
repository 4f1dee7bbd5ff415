"""Data splits: stratified, disjoint, complete and seeded; real datasets prepared and verified."""

import numpy as np
import pytest
import torch

from bench.data import load_prepared, prepare_dataset
from bench.data.splits import stratified_split, stratified_subset
from bench.errors import BenchError
from tests.conftest import SHARED_INDIAN_PINES


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return np.concatenate([np.full(n, c) for c, n in enumerate([5, 20, 137, 1000])])[rng.permutation(1162)]


def test_split_is_disjoint_complete_and_stratified(labels):
    split = stratified_split(labels, {"train": 0.2, "val": 0.1}, seed=3, rest="test")
    parts = [split["train"], split["val"], split["test"]]
    assert sum(len(p) for p in parts) == len(labels)
    assert len(np.unique(np.concatenate(parts))) == len(labels)
    for cls in np.unique(labels):
        n = (labels == cls).sum()
        for name, frac in (("train", 0.2), ("val", 0.1)):
            got = (labels[split[name]] == cls).sum()
            assert got >= 1 and abs(got - frac * n) <= 1, (cls, name, got, n)
        assert (labels[split["test"]] == cls).sum() >= 1


def test_split_is_seeded(labels):
    a = stratified_split(labels, {"val": 0.1}, seed=1, rest="train")
    b = stratified_split(labels, {"val": 0.1}, seed=1, rest="train")
    c = stratified_split(labels, {"val": 0.1}, seed=2, rest="train")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])


def test_subset_keeps_class_proportions(labels):
    keep = stratified_subset(labels, 300, seed=0)
    assert abs(len(keep) - 300) <= 4
    assert np.array_equal(np.bincount(labels[keep]) > 0, np.bincount(labels) > 0)


def test_fashion_mnist_prepared_from_real_files(tmp_path, real_params):
    manifest = prepare_dataset("fashion_mnist", real_params["prepare"]["fashion_mnist"], tmp_path)
    assert manifest["sizes"] == {"train": 54000, "val": 6000, "test": 10000}
    assert manifest["class_counts"]["val"] == [600] * 10
    assert manifest["class_counts"]["test"] == [1000] * 10
    assert len(manifest["sources"]["files"]) == 4
    data = load_prepared("fashion_mnist", tmp_path)
    x = data.splits["train"].batch(torch.arange(512))
    assert x.shape == (512, 1, 28, 28) and abs(float(x.mean())) < 0.1
    train, val = data.splits["train"].array, data.splits["val"].array
    assert not (train[:2000, None] == val[None, :200]).flatten(2).all(-1).any()  # no shared images


def test_indian_pines_split_and_standardisation(tmp_path, real_params):
    params = real_params["prepare"]["indian_pines"]
    manifest = prepare_dataset("indian_pines", params, tmp_path)
    counts = {s: np.array(manifest["class_counts"][s]) for s in ("train", "val", "test")}
    total = counts["train"] + counts["val"] + counts["test"]
    assert total.sum() == 10249 and len(total) == 16
    assert (counts["train"] >= 1).all() and (counts["val"] >= 1).all() and (counts["test"] >= 1).all()
    assert np.all(np.abs(counts["train"] - params["train_fraction"] * total) <= 1)
    data = load_prepared("indian_pines", tmp_path)
    train = data.splits["train"]
    centres = train.batch(torch.arange(len(train)))[:, :, 3, 3]  # the labelled pixel itself
    assert torch.allclose(centres.mean(0), torch.zeros(200), atol=1e-4)  # fitted on training pixels
    assert torch.allclose(centres.std(0, unbiased=False), torch.ones(200), atol=1e-3)
    test = data.splits["test"]
    test_centres = test.batch(torch.arange(len(test)))[:, :, 3, 3]
    assert not torch.allclose(test_centres.mean(0), torch.zeros(200), atol=1e-4)


@pytest.mark.skipif(not SHARED_INDIAN_PINES.is_dir(), reason="shared GIC .mat copies not beside the checkout")
def test_indian_pines_from_gic_mat_files_equals_tensorly(tmp_path, real_params):
    from_mat = prepare_dataset("indian_pines", {**real_params["prepare"]["indian_pines"],
                                                "source": str(SHARED_INDIAN_PINES)}, tmp_path / "mat")
    from_tensorly = prepare_dataset("indian_pines", real_params["prepare"]["indian_pines"], tmp_path / "npy")
    assert from_mat["class_counts"] == from_tensorly["class_counts"]
    assert from_mat["sources"]["cube_content_sha256"] == from_tensorly["sources"]["cube_content_sha256"]


def test_corrupt_fashion_mnist_file_is_named(tmp_path, monkeypatch, real_params):
    import shutil

    from bench.data import fashion_mnist

    source = fashion_mnist.locate_files()
    for path in source.values():
        shutil.copy(path, tmp_path / path.name)
    victim = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    monkeypatch.setenv(fashion_mnist.ENV_DIR, str(tmp_path))
    with pytest.raises(BenchError, match="corrupt data file .*t10k-labels-idx1-ubyte.gz"):
        prepare_dataset("fashion_mnist", real_params["prepare"]["fashion_mnist"], tmp_path / "out")
    assert not (tmp_path / "out" / "fashion_mnist" / "manifest.json").exists()


def test_missing_indian_pines_folder_is_named(tmp_path, real_params):
    params = {**real_params["prepare"]["indian_pines"], "source": str(tmp_path / "nowhere")}
    with pytest.raises(BenchError, match="missing data file .*Indian_pines_corrected.mat"):
        prepare_dataset("indian_pines", params, tmp_path / "out")


def test_prepared_file_tampering_is_detected(tmp_path, tiny_params):
    prepare_dataset("tiny", tiny_params["prepare"]["tiny"], tmp_path)
    path = tmp_path / "tiny" / "data.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the stored tensors
    path.write_bytes(bytes(raw))
    with pytest.raises(BenchError, match="corrupt|does not match its manifest checksum"):
        load_prepared("tiny", tmp_path)


def test_tensor_change_in_prepared_file_is_detected(tmp_path, tiny_params):
    prepare_dataset("tiny", tiny_params["prepare"]["tiny"], tmp_path)
    payload = torch.load(tmp_path / "tiny" / "data.pt", weights_only=True)
    payload["labels"]["test"][0] += 1
    torch.save(payload, tmp_path / "tiny" / "data.pt")
    with pytest.raises(BenchError, match="does not match its manifest checksum"):
        load_prepared("tiny", tmp_path)


def test_preparing_twice_gives_the_same_content_checksum(tmp_path, tiny_params):
    first = prepare_dataset("tiny", tiny_params["prepare"]["tiny"], tmp_path / "a")
    second = prepare_dataset("tiny", tiny_params["prepare"]["tiny"], tmp_path / "b")
    assert first["data_sha256"] == second["data_sha256"]
