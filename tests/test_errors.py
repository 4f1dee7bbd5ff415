"""Bad input: one line naming the bad key or file and the valid choices, exit code 2, no traceback,
nothing half-written."""

import copy
import subprocess
import sys

import pytest
import yaml

from bench.cli import main
from bench.evaluate.policies import POLICIES
from tests.conftest import write_params


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("eebench: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def mutated(params, path, value):
    out = copy.deepcopy(params)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


DELETE = object()

BAD_PARAMS = [
    (("grid", "methods"), ["joint", "nosuch"], ["unknown method 'nosuch'", "grid.methods", "branchynet, cascade_aware"]),
    (("grid", "datasets"), ["mnist"], ["unknown dataset 'mnist'", "fashion_mnist, indian_pines, tiny"]),
    (("grid", "seeds"), [], ["grid.seeds", "non-empty"]),
    (("grid", "colour"), "red", ["unknown parameter grid.colour", "valid keys: datasets, extra_seed_methods, extra_seeds, methods, models, seeds"]),
    (("methods", "joint", "label_smothing"), 0.1, ["unknown parameter methods.joint.label_smothing", "label_smoothing"]),
    (("methods", "branchynet", "weights"), "heavy", ["methods.branchynet.weights must be list, got str"]),
    (("train", "tiny", "epochs"), 2.5, ["train.tiny.epochs must be int, got float"]),
    (("train", "tiny", "epochs"), 0, ["train.tiny.epochs = 0 is out of range", "integer >= 1"]),
    (("train", "tiny", "model", "name"), "resnet", ["unknown model 'resnet'", "fmnist_cnn"]),
    (("train", "common", "device"), "tpu", ["train.common.device = 'tpu'", "cpu | cuda | auto"]),
    (("prepare", "indian_pines", "val_fraction"), 1.5, ["prepare.indian_pines.val_fraction = 1.5 is out of range"]),
    (("evaluate", "thresholds"), [0.5, 1.2], ["evaluate.thresholds", "[0, 1]"]),
    (("evaluate", "policies"), ["coin_flip"], ["unknown exit policy 'coin_flip'", "valid choices: " + ", ".join(sorted(POLICIES.names()))]),
    (("evaluate",), DELETE, ["params.yaml has no `evaluate` section"]),
]


@pytest.mark.parametrize("path,value,fragments", BAD_PARAMS, ids=[".".join(p[0]) for p in BAD_PARAMS])
def test_bad_params_are_one_line_errors(in_tmp, tiny_params, capsys, path, value, fragments):
    write_params(in_tmp, mutated(tiny_params, path, value))
    code, err = run_cli(capsys, "prepare", "--dataset", "tiny")
    assert_one_line_error(code, err, *fragments)
    assert not (in_tmp / "datasets").exists()


def test_malformed_yaml_names_the_line(in_tmp, capsys):
    (in_tmp / "params.yaml").write_text("grid:\n  methods: [joint\n  datasets: [tiny]\n")
    code, err = run_cli(capsys, "prepare", "--dataset", "tiny")
    assert_one_line_error(code, err, "params.yaml is not valid YAML at line")


def test_missing_params_file(in_tmp, capsys):
    code, err = run_cli(capsys, "prepare", "--dataset", "tiny")
    assert_one_line_error(code, err, "params.yaml not found")


def test_unknown_method_on_the_command_line(in_tmp, tiny_params, capsys):
    write_params(in_tmp, tiny_params)
    code, err = run_cli(capsys, "train", "--dataset", "tiny", "--method", "hardcgt", "--seed", "0")
    assert_one_line_error(code, err, "unknown method 'hardcgt'", "valid choices: branchynet, ", "hard_cgt")


def test_missing_prepared_data_says_how_to_get_it(in_tmp, tiny_params, capsys):
    write_params(in_tmp, tiny_params)
    code, err = run_cli(capsys, "train", "--dataset", "tiny", "--method", "joint", "--seed", "0")
    assert_one_line_error(code, err, "prepared dataset datasets/tiny is missing", "eebench prepare --dataset tiny")
    assert not (in_tmp / "results").exists()


def test_missing_fashion_mnist_says_how_to_get_it(in_tmp, tiny_params, capsys, monkeypatch):
    monkeypatch.setenv("EEBENCH_FASHION_MNIST_DIR", str(in_tmp / "empty"))
    write_params(in_tmp, tiny_params)
    code, err = run_cli(capsys, "prepare", "--dataset", "fashion_mnist")
    assert_one_line_error(code, err, "missing data file", "apt-get install dataset-fashion-mnist")
    assert not (in_tmp / "datasets" / "fashion_mnist" / "manifest.json").exists()


def test_console_script_exits_nonzero_without_traceback(in_tmp, tiny_params):
    params = mutated(tiny_params, ("grid", "methods"), ["nosuch"])
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "bench.cli", "prepare", "--dataset", "tiny"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr


# --- prepared data: the whole manifest is verified, damaged files are named with the fix ---------------------

PREPARE_FIX = "run `eebench prepare --dataset tiny` (or `dvc repro -f prepare@tiny`)"


def prepared(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)
    assert main(["prepare", "--dataset", "tiny"]) == 0
    return in_tmp / "datasets/tiny/manifest.json", in_tmp / "datasets/tiny/data.pt"


def rewrite_manifest(path, change, reseal):
    import json

    from bench.data.base import manifest_digest

    manifest = json.loads(path.read_text())
    change(manifest)
    if reseal:  # also forge the manifest's own checksum: the checks against the data must still catch it
        manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


TRAIN = ("train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet")

MANIFEST_EDITS = [  # change, resealed, what the message must say
    (lambda m: m["extra"].update(mean=[5.0]), False, "does not match the checksum written when it was prepared"),
    (lambda m: m.update(num_classes=10), False, "does not match the checksum written when it was prepared"),
    (lambda m: m.update(num_classes=10), True, "num_classes 10, but dataset tiny has 4 classes"),
    (lambda m: m["extra"].update(std=[-1.0]), True, "extra.std [-1.0] is not 1 finite positive number(s)"),
    (lambda m: m["extra"].update(mean=[0.0, 0.0]), True, "extra.mean [0.0, 0.0] is not 1 finite number(s)"),
    (lambda m: m["sizes"].update(train=7), True, "sizes.train 7, but data.pt holds"),
    (lambda m: m["class_counts"].update(test=[0, 0, 0, 128]), True, "class_counts.test differs"),
    (lambda m: m["stored_shapes"].update(val=[1, 2]), True, "stored_shapes.val [1, 2]"),
    (lambda m: m.update(kind="patches"), True, "kind 'patches' but data.pt holds 'images'"),
    (lambda m: m.pop("manifest_sha256"), False, "missing manifest_sha256"),
]


@pytest.mark.parametrize("change,reseal,fragment", MANIFEST_EDITS, ids=[e[2][:30] for e in MANIFEST_EDITS])
def test_edited_manifest_is_refused_before_training(in_tmp, tiny_params, capsys, change, reseal, fragment):
    manifest, _ = prepared(in_tmp, tiny_params)
    rewrite_manifest(manifest, change, reseal)
    code, err = run_cli(capsys, *TRAIN)
    assert_one_line_error(code, err, "datasets/tiny/manifest.json", fragment, PREPARE_FIX)
    assert not (in_tmp / "results").exists()


def test_untouched_manifest_loads(in_tmp, tiny_params):
    from bench.data import load_prepared

    manifest, _ = prepared(in_tmp, tiny_params)
    rewrite_manifest(manifest, lambda m: None, reseal=False)  # rewritten unchanged (other JSON formatting)
    assert load_prepared("tiny", in_tmp / "datasets").num_classes == 4


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip"])
@pytest.mark.parametrize("name", ["manifest.json", "data.pt"])
def test_damaged_prepared_file_is_named_with_the_fix(in_tmp, tiny_params, capsys, name, damage):
    paths = dict(zip(("manifest.json", "data.pt"), prepared(in_tmp, tiny_params)))
    raw = bytearray(paths[name].read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[len(raw) // 3] ^= 0xFF
    paths[name].write_bytes(bytes(raw))
    code, err = run_cli(capsys, *TRAIN)
    assert_one_line_error(code, err, f"datasets/tiny/{name}", "eebench prepare --dataset tiny")
    assert not (in_tmp / "results").exists()


def test_truncated_npy_source_is_named(tmp_path):
    import numpy as np

    from bench.errors import BenchError
    from bench.io import load_npy

    path = tmp_path / "Indian_pines_gt.npy"
    np.save(path, np.arange(1000, dtype=np.uint8).reshape(10, 100))
    assert load_npy(path, "fix it").shape == (10, 100)
    for cut in (500, 60, 5, 0):
        path.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(BenchError, match=r"Indian_pines_gt.npy is corrupt .*; fix it$"):
            load_npy(path, "fix it")
