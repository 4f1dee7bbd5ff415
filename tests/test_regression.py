"""The CI regression check bites: a deliberately broken method fails it, an unchanged one passes."""

import json

import pandas as pd
import pytest
import torch

from bench.analyse.headline import compare, format_table
from bench.cli import main
from bench.study import merge
from tests.conftest import write_params

NUMBERS = {"toy": {"net": {"m": {"deepest_exit_test_accuracy": {"expected": 0.90, "tolerance": 0.01}}}}}


def test_compare_flags_only_changes_beyond_tolerance():
    ok = compare({"numbers": NUMBERS}, {"numbers": {"toy": {"net": {"m": {"deepest_exit_test_accuracy": {"mean": 0.905}}}}}})
    bad = compare({"numbers": NUMBERS}, {"numbers": {"toy": {"net": {"m": {"deepest_exit_test_accuracy": {"mean": 0.88}}}}}})
    other = compare({"numbers": NUMBERS}, {"numbers": {"toy": {"net2": {"m": {"deepest_exit_test_accuracy": {"mean": 0.9}}}}}})
    gone = compare({"numbers": NUMBERS}, {"numbers": {}})
    assert ok["status"].tolist() == ["ok"] and bad["status"].tolist() == ["REGRESSED"]
    assert gone["status"].tolist() == ["MISSING"]
    assert other["status"].tolist() == ["MISSING", "new (not checked)"]  # another model's number is not this one's
    assert "REGRESSED" in format_table(bad) and "0.8800" in format_table(bad)


def run_tiny_grid(folder):
    for command in (["prepare", "--dataset", "tiny"],
                    *[[stage, "--dataset", "tiny", "--method", m, "--seed", str(s)] + (["--quiet"] if stage == "train" else [])
                      for m in ("joint", "branchynet") for s in (0, 1) for stage in ("train", "evaluate", "tune")],
                    ["aggregate"]):
        assert main(command) == 0, command
    return folder / "results" / "headline.json"


@pytest.mark.slow
def test_a_broken_method_fails_the_regression(in_tmp, tiny_params, capsys, monkeypatch):
    write_params(in_tmp, merge(tiny_params, {"grid": {"seeds": [0, 1]}, "train": {"tiny": {"epochs": 4}},
                                             "tune": {"budgets": [0.3, 0.5, 0.7]}}))
    headline = run_tiny_grid(in_tmp)
    expected = in_tmp / "expected.json"
    assert main(["bless", "--headline", str(headline), "--expected", str(expected), "--profile", "tiny"]) == 0
    assert json.loads(expected.read_text())["numbers"]["tiny"]["tiny_cnn"]["joint"]
    assert main(["regress", "--headline", str(headline), "--expected", str(expected)]) == 0
    capsys.readouterr()

    from methods.joint import Joint

    original = Joint.exit_losses

    def broken(self, logits, targets, ctx):  # exit 0's loss scaled to zero: a plausible refactoring slip
        return original(self, logits, targets, ctx) * torch.tensor([0.0] + [1.0] * (len(logits) - 1))

    monkeypatch.setattr(Joint, "exit_losses", broken)
    import shutil

    shutil.rmtree(in_tmp / "results" / "runs")  # the patch is in memory, so the checkpoints' code fingerprint cannot see it
    run_tiny_grid(in_tmp)
    assert main(["regress", "--headline", str(headline), "--expected", str(expected)]) == 2
    out = capsys.readouterr()
    lines = out.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dataset"))
    table = pd.DataFrame([line.split() for line in lines[header + 1:] if line.startswith("tiny")])
    assert any(row[2] == "joint" and row[-1] == "REGRESSED" for row in table.values.tolist())
    assert all(row[-1] == "ok" for row in table.values.tolist() if row[2] == "branchynet")
    assert "headline numbers regressed" in out.err


def test_committed_expectations_cover_the_ci_profile():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    expected = json.loads((root / "tests/regression/expected.json").read_text())
    profile = yaml.safe_load((root / "profiles/ci.yaml").read_text())
    assert expected["profile"] == "ci" and "tolerance_rule" in expected and expected["versions"]["torch"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert set(expected["numbers"]) == set(profile["grid"]["datasets"])
    for dataset in profile["grid"]["datasets"]:  # the ci profile studies each dataset with its one model
        assert list(expected["numbers"][dataset]) == [params["train"][dataset]["model"]["name"]]
        (numbers,) = expected["numbers"][dataset].values()
        assert set(numbers) == set(profile["grid"]["methods"])
