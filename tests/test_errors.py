"""Bad input: one line naming the bad key or file and the valid choices, exit code 2, no traceback,
nothing half-written."""

import copy
import subprocess
import sys

import pytest
import yaml

from bench.cli import main
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
    (("grid", "colour"), "red", ["unknown parameter grid.colour", "valid keys: datasets, extra_seed_methods, extra_seeds, methods, seeds"]),
    (("methods", "joint", "label_smothing"), 0.1, ["unknown parameter methods.joint.label_smothing", "label_smoothing"]),
    (("methods", "branchynet", "weights"), "heavy", ["methods.branchynet.weights must be list, got str"]),
    (("train", "tiny", "epochs"), 2.5, ["train.tiny.epochs must be int, got float"]),
    (("train", "tiny", "epochs"), 0, ["train.tiny.epochs = 0 is out of range", "integer >= 1"]),
    (("train", "tiny", "model", "name"), "resnet", ["unknown model 'resnet'", "fmnist_cnn"]),
    (("train", "common", "device"), "tpu", ["train.common.device = 'tpu'", "cpu | cuda | auto"]),
    (("prepare", "indian_pines", "val_fraction"), 1.5, ["prepare.indian_pines.val_fraction = 1.5 is out of range"]),
    (("evaluate", "thresholds"), [0.5, 1.2], ["evaluate.thresholds", "[0, 1]"]),
    (("evaluate", "policies"), ["coin_flip"], ["unknown exit policy 'coin_flip'", "beem, entropy, learned_gate, max_softmax, patience"]),
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
