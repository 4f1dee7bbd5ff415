"""Models as a grid axis, through the real DVC pipeline: a tiny study with two models on one dataset (tiny_cnn
and tiny_mlp) trains, tunes, aggregates, draws and reports both side by side, plans both, and a change to one
model's settings makes only that model's runs stale."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from bench.study import build_study, dvc, merge
from tests.conftest import ROOT, cli_env

MODELS = ["tiny_cnn", "tiny_mlp"]
TWO_MODELS = {
    "grid": {"methods": ["joint", "branchynet"], "models": {"tiny": MODELS}},
    "train": {"tiny": {"epochs": 1, "models": {"tiny_mlp": {"model": {"widths": [16, 16]}, "lr": 0.005}}}},
    "tune": {"trials": 5, "pareto_budgets": 5, "budgets": [0.5, 0.985]},  # tiny_mlp: exit 0 costs ~97 %
}
TABLES = ("per_exit", "summary_exits", "summary_budgets", "budgets", "threshold_curves", "operating_points", "pareto",
          "grad_stats", "calibration", "runs", "significance", "claims")


BAD = {  # one-line errors naming the key and the fix
    "twice": ({"grid": {"models": {"tiny": ["tiny_cnn", "tiny_cnn"]}}},
              r"^grid.models.tiny lists tiny_cnn twice; list each model once$"),
    "unknown": ({"grid": {"models": {"tiny": ["tiny_cnn", "nope"]}}}, r"^unknown model 'nope' \(at grid.models.tiny\)"),
    "not studied": ({"train": {"tiny": {"models": {"fmnist_cnn": {"epochs": 2}}}}},
                    r"^train.tiny.models.fmnist_cnn overrides a model that is not studied on tiny .*add it to "
                    r"grid.models.tiny or remove the override$"),
    "bad value": ({"grid": {"models": {"tiny": MODELS}}, "train": {"tiny": {"models": {"tiny_mlp": {"epochs": 0}}}}},
                  r"^train.tiny.models.tiny_mlp.epochs = 0 is out of range"),
    "bad model key": ({"grid": {"models": {"tiny": MODELS}},
                       "train": {"tiny": {"models": {"tiny_mlp": {"model": {"head_width": 8}}}}}},
                      r"^unknown parameter train.tiny.models.tiny_mlp.model.head_width; valid keys: widths$"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_settings_are_one_line_errors(tiny_params, case):
    from bench.config import validate
    from bench.errors import BenchError

    change, message = BAD[case]
    with pytest.raises(BenchError, match=message):
        validate(merge(tiny_params, change))


def test_settings_merge_each_models_override_over_the_dataset_section(tiny_params):
    from bench.config import models_of, setting, validate

    params = validate(merge(tiny_params, TWO_MODELS))
    tiny = params["train"]["tiny"]
    assert models_of(params, "tiny") == MODELS and models_of(validate(tiny_params), "tiny") == ["tiny_cnn"]
    cnn, mlp = setting(params, "tiny", "tiny_cnn"), setting(params, "tiny", "tiny_mlp")
    assert cnn == {k: v for k, v in tiny.items() if k != "models"}  # its own section, untouched
    assert mlp == {**cnn, "model": {"name": "tiny_mlp", "widths": [16, 16]}, "lr": 0.005}  # only what was overridden


def plan(folder) -> dict[tuple[str, str], tuple[str, str]]:
    out = subprocess.run([sys.executable, "-m", "bench.cli", "plan", "--json"], cwd=folder, env=cli_env(),
                         capture_output=True, text=True, check=True).stdout
    return {(r["model"], r["method"]): (r["state"], r["reason"]) for r in json.loads(out)["runs"]}


@pytest.mark.slow
def test_two_models_on_one_dataset_through_the_pipeline(tmp_path, tiny_params, monkeypatch):
    folder = tmp_path / "study"
    build_study(ROOT, folder, merge(tiny_params, TWO_MODELS))
    dvc(folder, "repro")

    for method in ("joint", "branchynet"):  # one stage per dataset × method, one folder per model inside
        assert sorted(p.name for p in (folder / "results/runs/tiny" / method).iterdir()) == MODELS
        for model in MODELS:
            record = json.loads((folder / f"results/runs/tiny/{method}/{model}/seed0/metrics.json").read_text())
            assert record["identity"]["components"]["run"]["model"] == model
            assert record["settings"]["dataset"]["model"]["name"] == model
            assert (folder / f"results/eval/tiny/{method}/{model}/seed0.json").is_file()
            assert (folder / f"results/tune/tiny/{method}/{model}/seed0/tuning.json").is_file()
    mlp = json.loads((folder / "results/runs/tiny/joint/tiny_mlp/seed0/metrics.json").read_text())
    assert mlp["num_exits"] == 2 and mlp["settings"]["dataset"]["lr"] == 0.005  # its own setting

    for name in TABLES:  # every table with `dataset` has `model` beside it, with both models
        table = pd.read_csv(folder / "results" / f"{name}.csv")
        assert list(table.columns[list(table.columns).index("dataset"):][:2]) == ["dataset", "model"], name
        assert sorted(table["model"].unique()) == MODELS, name
    exits = pd.read_csv(folder / "results/per_exit.csv").groupby("model")["exit"].max().to_dict()
    assert exits == {"tiny_cnn": 2, "tiny_mlp": 1}
    metrics = json.loads((folder / "results/metrics.json").read_text())
    headline = json.loads((folder / "results/headline.json").read_text())
    assert sorted(metrics["tiny"]) == MODELS and sorted(headline["numbers"]["tiny"]) == MODELS
    assert all(sorted(metrics["tiny"][m]) == ["branchynet", "joint"] for m in MODELS)

    report = (folder / "results/REPORT.md").read_text()
    for model in MODELS:
        assert f"### tiny · {model}" in report
    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert "per_exit_accuracy_tiny.png" in figures and "pareto_tiny.png" in figures

    # the figures show both models side by side: one subfigure per model, titled with it
    import bench.analyse.figures as figs

    drawn = {}
    monkeypatch.setattr(figs, "save", lambda fig, where, name: drawn.setdefault(name, fig) and [])
    from bench.config import load_params

    params = load_params(folder / "params.yaml")
    figs.make_figures(folder / "results", tmp_path / "again", params["analyse"], params)
    assert set(drawn) == {p.removesuffix(".png") for p in figures}
    for name, fig in drawn.items():
        titles = [" ".join([sub.get_suptitle()] + [ax.get_title() for ax in sub.axes]) for sub in fig.subfigs]
        assert len(titles) == 2 and "tiny · tiny_cnn" in titles[0] and "tiny · tiny_mlp" in titles[1], name

    assert set(plan(folder).values()) == {("done", "")}
    assert set(plan(folder)) == {(m, method) for m in MODELS for method in ("joint", "branchynet")}

    cnn = {m: (folder / f"results/runs/tiny/{m}/tiny_cnn/seed0/metrics.json").read_bytes() for m in ("joint", "branchynet")}
    edited = yaml.safe_load((folder / "params.yaml").read_text())
    edited["train"]["tiny"]["models"]["tiny_mlp"]["lr"] = 0.002  # one model's setting
    (folder / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    states = plan(folder)
    assert {k: v for k, v in states.items() if v[0] != "done"} == {
        ("tiny_mlp", "joint"): ("stale", "params train.tiny changed"),
        ("tiny_mlp", "branchynet"): ("stale", "params train.tiny changed")}
    output = dvc(folder, "repro").stdout
    assert "up to date: joint/tiny/tiny_cnn/s0" in output and "up to date: branchynet/tiny/tiny_cnn/s0" in output
    assert all((folder / f"results/runs/tiny/{m}/tiny_cnn/seed0/metrics.json").read_bytes() == cnn[m] for m in cnn)
    assert set(plan(folder).values()) == {("done", "")}
    assert json.loads((folder / "results/runs/tiny/joint/tiny_mlp/seed0/metrics.json").read_text())[
        "settings"]["dataset"]["lr"] == 0.002
