"""The real DVC pipeline on the tiny grid: end to end, no-op when unchanged, and a change to one
method's params reruns only that method's stage and the aggregate."""

import json
import re

import pytest
import yaml

from bench.study import build_study, dvc
from tests.conftest import ROOT


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_pipeline_end_to_end_noop_and_incremental(tmp_path, tiny_params):
    folder = tmp_path / "study"
    build_study(ROOT, folder, tiny_params)
    first = dvc(folder, "repro").stdout
    assert stages_run(first) == {"prepare@tiny", "runs@tiny-joint", "runs@tiny-branchynet", "aggregate", "figures"}
    metrics = json.loads((folder / "results/metrics.json").read_text())
    assert set(metrics["tiny"]) == {"tiny_cnn"} and set(metrics["tiny"]["tiny_cnn"]) == {"joint", "branchynet"}
    assert 0.25 < metrics["tiny"]["tiny_cnn"]["joint"]["deepest_exit_test_accuracy"] <= 1.0
    assert "FLOPs" in metrics["flops_unit"]
    assert 0.0 < metrics["tiny"]["tiny_cnn"]["joint"]["budget_0.5"]["test_flops_fraction"] <= 1.0
    for name in ("per_exit.csv", "summary_exits.csv", "summary_budgets.csv", "threshold_curves.csv", "budgets.csv",
                 "pareto.csv", "operating_points.csv", "grad_stats.csv", "calibration.csv", "significance.csv",
                 "runs.csv", "claims.csv"):
        assert (folder / "results" / name).stat().st_size > 0

    assert json.loads(dvc(folder, "status", "--json").stdout) == {}
    assert stages_run(dvc(folder, "repro").stdout) == set()

    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["methods"]["branchynet"]["label_smoothing"] = 0.1
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(dvc(folder, "repro").stdout) == {"runs@tiny-branchynet", "aggregate", "figures"}
    assert json.loads(dvc(folder, "status", "--json").stdout) == {}
    metrics_json = json.loads(dvc(folder, "metrics", "show", "--json").stdout)
    assert metrics_json  # declared to DVC

    trained = run_hashes(folder)
    params["grid"].update(extra_seed_methods=["joint"], extra_seeds=[1])  # more seeds for one method only
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc(folder, "repro").stdout
    assert {"runs@tiny-joint", "runs@tiny-branchynet"} <= stages_run(output)  # the stages read grid.extra_*
    # done runs are skipped by their identity, not even their checkpoints read (bench/plan.py)
    assert "up to date: branchynet/tiny/tiny_cnn/s0" in output and "up to date: joint/tiny/tiny_cnn/s0" in output
    assert "resuming" not in output and "branchynet/tiny/tiny_cnn/s0 epoch" not in output
    assert "joint/tiny/tiny_cnn/s1 epoch 1/" in output  # only the new seed trains
    for step in ("evaluate", "tune"):  # and only its evaluation and tuning are computed (bench/derived.py)
        assert f"up to date: {step} branchynet/tiny/tiny_cnn/s0" in output and f"up to date: {step} joint/tiny/tiny_cnn/s0" in output
        assert f"up to date: {step} joint/tiny/tiny_cnn/s1" not in output
    assert "evaluated joint on tiny with tiny_cnn seed 1" in output
    assert run_hashes(folder)["results/runs/tiny/branchynet"] == trained["results/runs/tiny/branchynet"]
    metrics = json.loads((folder / "results/metrics.json").read_text())
    assert metrics["tiny"]["tiny_cnn"]["joint"]["seeds"] == 2 and metrics["tiny"]["tiny_cnn"]["branchynet"]["seeds"] == 1

    params["grid"].update(extra_seed_methods=[], extra_seeds=[])  # and back: the persisted seed1 folder goes
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(folder, "repro")
    assert sorted(p.name for p in (folder / "results/runs/tiny/joint/tiny_cnn").iterdir()) == ["seed0"]
    assert run_hashes(folder) == trained


def run_hashes(folder) -> dict[str, str]:
    """The content hash DVC recorded for each training stage's output (bit-identical runs hash equal)."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for name, stage in lock.items() if name.startswith("runs@")
            for out in stage["outs"]}


def test_profiles_compose_onto_the_real_params():
    from bench.study import profile_params

    smoke = profile_params(ROOT, "smoke")
    real = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert smoke["grid"]["datasets"] == ["tiny"] and smoke["grid"]["methods"] == real["grid"]["methods"]
    assert smoke["train"]["tiny"]["epochs"] == 3
    assert smoke["train"]["tiny"]["model"] == real["train"]["tiny"]["model"]


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_composes_into_valid_params(profile):
    from bench.config import seeds_of
    from bench.study import profile_params

    params = profile_params(ROOT, profile)  # raises on an unknown key or out-of-range value
    for method in params["grid"]["methods"]:
        assert set(params["grid"]["seeds"]) <= set(seeds_of(params["grid"], method))


def test_three_seeds_profile_is_the_default_grid_without_extra_seeds():
    from bench.config import seeds_of
    from bench.study import profile_params

    default, three = profile_params(ROOT, ROOT / "params.yaml"), profile_params(ROOT, "three_seeds")
    assert {k: v for k, v in three.items() if k != "grid"} == {k: v for k, v in default.items() if k != "grid"}
    assert three["grid"]["methods"] == default["grid"]["methods"]
    assert three["grid"]["datasets"] == default["grid"]["datasets"]
    assert all(seeds_of(three["grid"], m) == [0, 1, 2] for m in three["grid"]["methods"])
    assert any(len(seeds_of(default["grid"], m)) > 3 for m in default["grid"]["methods"])
