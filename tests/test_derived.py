"""Derived outputs (evaluate's record, tune's thresholds) are recomputed exactly when what they are computed
from changed: the run's files, the step's params, its code closure, or the outputs themselves (bench/derived.py).
A DVC stage that reruns for another method's sake leaves an up-to-date run's outputs byte-identical."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.study import merge
from tests.conftest import TINY, run_stages, write_params

SMALL = {"prepare": {"tiny": {"n_train": 128}}, "train": {"tiny": {"epochs": 1}, "common": {"threads": 1}},
         "tune": {"trials": 4}}
EVAL = "results/eval/tiny/joint/tiny_cnn/seed0.json"
TUNE = "results/tune/tiny/joint/tiny_cnn/seed0"
EVALUATE = ["evaluate", "--dataset", "tiny", "--method", "joint"]
TUNE_CMD = ["tune", "--dataset", "tiny", "--method", "joint"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_params) -> Path:
    return run_stages(tmp_path_factory.mktemp("derived"), merge(merge(copy.deepcopy(real_params), TINY), SMALL),
                      (["prepare", "--dataset", "tiny"], ["train", "--dataset", "tiny", "--method", "joint", "--quiet"],
                       EVALUATE, TUNE_CMD))


@pytest.fixture
def study(trained, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(trained, folder)
    monkeypatch.chdir(folder)
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for sub in ("results/eval", "results/tune", "results/studies") for p in sorted((folder / sub).rglob("*"))
            if p.is_file()}


def stable(folder: Path) -> dict:
    """`outputs` less what a recomputation may change: wall times (tuning.json's seconds, the Optuna journal's
    datetimes and worker ids) and so the stamp's hash of the journal."""
    import json

    got = {}
    for name, data in outputs(folder).items():
        if name.endswith("optuna.journal"):
            got[name] = [{k: v for k, v in json.loads(line).items() if not k.startswith("datetime") and k != "worker_id"}
                         for line in data.decode().splitlines()]
        elif name.endswith("tuning.json"):
            record = json.loads(data)
            record.pop("exact_sweep_seconds"), record.pop("stamp")
            got[name] = {**record, "budgets": [{k: v for k, v in b.items() if k != "seconds"} for b in record["budgets"]]}
        else:
            got[name] = data
    return got


def rerun(capsys, params_change: dict | None = None) -> tuple[str, str]:
    if params_change:
        import yaml

        params = yaml.safe_load(Path("params.yaml").read_text())
        write_params(Path("."), merge(params, params_change))
    capsys.readouterr()
    assert main(EVALUATE) == 0
    evaluate = capsys.readouterr().out
    assert main(TUNE_CMD) == 0
    return evaluate, capsys.readouterr().out


def test_unchanged_inputs_skip_both_steps_and_keep_their_bytes(study, capsys):
    before = outputs(study)
    evaluate, tune = rerun(capsys)
    assert evaluate.startswith("up to date: evaluate joint/tiny/tiny_cnn/s0 (inputs ")
    assert tune.startswith("up to date: tune joint/tiny/tiny_cnn/s0 (inputs ")
    assert outputs(study) == before


def test_a_step_reruns_on_its_own_params_only(study, capsys):
    evaluate, tune = rerun(capsys, {"tune": {"trials": 5}})
    assert "up to date: evaluate" in evaluate and "up to date" not in tune and "budget" in tune
    evaluate, tune = rerun(capsys, {"evaluate": {"thresholds": [0.5, 0.9]}})
    assert "up to date" not in evaluate and "evaluated joint on tiny" in evaluate and "up to date: tune" in tune


def test_a_changed_run_reruns_both_and_gives_what_a_fresh_computation_gives(study, capsys):
    """Retraining writes new run files: both steps recompute, and their result equals a from-scratch one."""
    import json

    record = study / "results/runs/tiny/joint/tiny_cnn/seed0/metrics.json"
    metrics = json.loads(record.read_text())
    metrics["time"]["seconds_per_epoch"] += 1.0  # as a retrained run (same weights, another wall time) would
    record.write_text(json.dumps(metrics))
    evaluate, tune = rerun(capsys)
    assert "up to date" not in evaluate + tune
    again = stable(study)
    for path in (EVAL, f"{TUNE}/tuning.json"):
        (study / path).unlink()
    rerun(capsys)
    assert stable(study) == again


@pytest.mark.parametrize("damaged", [f"{TUNE}/pareto.csv", f"{TUNE}/operating_points.csv",
                                     "results/studies/tiny/joint/tiny_cnn/seed0/optuna.journal", EVAL])
def test_a_damaged_or_missing_output_is_recomputed_to_the_same_result(study, capsys, damaged):
    before = stable(study)
    path = study / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    evaluate, tune = rerun(capsys)
    assert ("up to date" in evaluate) == (damaged != EVAL) and ("up to date" in tune) == (damaged == EVAL)
    assert stable(study) == before
    path.unlink()
    rerun(capsys)
    assert stable(study) == before


def test_the_code_of_each_step_is_its_imports_closure(study, capsys, monkeypatch):
    """The code component is derived from imports: it holds the modules the hand-listed deps named, and a
    change to any file of it recomputes the step."""
    from bench import derived

    tune_files = dict(derived.step_code("tune"))
    evaluate_files = dict(derived.step_code("evaluate"))
    assert {"bench/tune/run.py", "bench/tune/exact.py", "bench/tune/search.py", "bench/evaluate/policies.py",
            "bench/evaluate/thresholds.py", "bench/io.py"} <= set(tune_files)
    assert {"bench/evaluate/thresholds.py", "bench/evaluate/policies.py"} <= set(evaluate_files)
    assert "bench/tune/run.py" not in evaluate_files and not any(f.startswith("methods/") for f in tune_files)
    edited = {**tune_files, "bench/tune/exact.py": "0" * 64}
    monkeypatch.setattr(derived, "step_code", lambda step: tuple(edited.items()) if step == "tune"
                        else tuple(evaluate_files.items()))
    evaluate, tune = rerun(capsys)
    assert "up to date: evaluate" in evaluate and "up to date" not in tune


@pytest.mark.parametrize("step", ["evaluate", "tune"])
def test_the_runs_stage_depends_on_every_file_of_each_steps_closure(step):
    import yaml

    from bench import derived
    from tests.conftest import ROOT

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["runs"]
    assert f"eebench {step} --dataset" in stage["cmd"]
    files = dict(derived.step_code(step))
    uncovered = [f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in stage["deps"])]
    assert not uncovered, f"{step}: {uncovered} not in the runs stage's deps"
