"""Reliability: kill -9 and resume bit-identically, atomic outputs, divergence records, no leakage of
fitted quantities from the test split."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.io import write_json
from bench.study import merge
from tests.conftest import write_params

LONG = {"prepare": {"tiny": {"n_train": 4096}}, "train": {"tiny": {"epochs": 10}}}


def cli(folder, *argv):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *argv], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(folder, *argv):
    process = cli(folder, *argv)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    return out


def outputs(folder):
    run = folder / "results/runs/tiny/joint/tiny_cnn/seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    for volatile in ("time", "environment"):
        metrics.pop(volatile)
    epochs = pd.read_csv(run / "epochs.csv").drop(columns="seconds")
    return (metrics, torch.load(run / "model.pt", weights_only=True), pd.read_csv(run / "steps.csv"),
            pd.read_csv(run / "grad_stats.csv"), epochs)


@pytest.mark.slow
def test_kill_minus_9_then_resume_is_bit_identical(tmp_path, tiny_params):
    params = merge(tiny_params, LONG)
    folders = {name: tmp_path / name for name in ("straight", "killed")}
    for folder in folders.values():
        folder.mkdir()
        write_params(folder, params)
        finish(folder, "prepare", "--dataset", "tiny")
    train = ("train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet")
    finish(folders["straight"], *train)

    process = cli(folders["killed"], *train)
    checkpoint = folders["killed"] / "results/runs/tiny/joint/tiny_cnn/seed0/checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=False)["epoch"] >= 3:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid-epoch: the next epoch is under way
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert process.returncode == -signal.SIGKILL and 3 <= killed_at < 10
    assert not (checkpoint.parent / "metrics.json").exists()

    log = finish(folders["killed"], *train)
    assert f"resuming joint/tiny/tiny_cnn/s0 after epoch {killed_at}/10" in log
    (m1, w1, s1, g1, e1), (m2, w2, s2, g2, e2) = outputs(folders["straight"]), outputs(folders["killed"])
    assert m1 == m2
    assert w1["model"].keys() == w2["model"].keys() and all(torch.equal(w1["model"][k], w2["model"][k]) for k in w1["model"])
    assert s1.equals(s2) and g1.equals(g2) and e1.equals(e2)


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path, tiny_params):
    write_params(tmp_path, tiny_params)
    finish(tmp_path, "prepare", "--dataset", "tiny")
    train = ("train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet")
    finish(tmp_path, *train)
    reference = outputs(tmp_path)
    other = merge(tiny_params, {"methods": {"joint": {"label_smoothing": 0.2}}})
    write_params(tmp_path, other)
    finish(tmp_path, *train)  # leaves a checkpoint written under other settings
    write_params(tmp_path, tiny_params)
    log = finish(tmp_path, *train)
    assert "ignoring" in log and "resuming" not in log
    assert outputs(tmp_path)[0] == reference[0]


def test_divergence_is_recorded_and_reported_never_averaged(in_tmp, tiny_params, capsys):
    params = merge(tiny_params, {"grid": {"seeds": [0, 1]}})
    write_params(in_tmp, params)
    assert main(["prepare", "--dataset", "tiny"]) == 0
    for seed in (0, 1):
        for method in ("joint", "branchynet"):
            if seed == 1 and method == "joint":
                write_params(in_tmp, merge(params, {"train": {"tiny": {"lr": 1.0e6}}}))
            assert main(["train", "--dataset", "tiny", "--method", method, "--seed", str(seed), "--quiet"]) == 0
            write_params(in_tmp, params)
            assert main(["evaluate", "--dataset", "tiny", "--method", method, "--seed", str(seed)]) == 0
            assert main(["tune", "--dataset", "tiny", "--method", method, "--seed", str(seed)]) == 0
    record = json.loads((in_tmp / "results/runs/tiny/joint/tiny_cnn/seed1/metrics.json").read_text())
    assert record["status"] == "failed" and ("diverged" in record["reason"] or "exploded" in record["reason"])
    assert not (in_tmp / "results/runs/tiny/joint/tiny_cnn/seed1/logits.pt").exists()
    assert "FAILED joint on tiny (tiny_cnn) seed 1" in capsys.readouterr().out
    assert main(["aggregate"]) == 0
    failed = pd.read_csv(in_tmp / "results/failed_runs.csv")
    assert failed[["method", "seed"]].values.tolist() == [["joint", 1]]
    per_exit = pd.read_csv(in_tmp / "results/per_exit.csv")
    assert set(map(tuple, per_exit[["method", "seed"]].drop_duplicates().values.tolist())) == {
        ("joint", 0), ("branchynet", 0), ("branchynet", 1)}
    summary = pd.read_csv(in_tmp / "results/summary_exits.csv")
    assert (summary.query("method == 'joint'")["n"] == 1).all()
    assert json.loads((in_tmp / "results/metrics.json").read_text())["failed_runs"] == 1


def test_a_write_killed_half_way_leaves_the_old_file_or_nothing(tmp_path):
    from bench.io import atomic_path

    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"partial": ')  # the process dies here
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_json(target, {"complete": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half')
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"complete": 1} and len(list(target.parent.iterdir())) == 1


def test_indian_pines_fitted_statistics_ignore_test_pixels(tmp_path, real_params, monkeypatch):
    from bench.data import indian_pines

    params = real_params["prepare"]["indian_pines"]
    cube, gt, files = indian_pines.load_tensorly()
    reference = indian_pines.prepare(params)
    test_pixels = reference.arrays["test"]
    perturbed = cube.astype(np.float64).copy()
    perturbed[test_pixels[:, 0], test_pixels[:, 1]] *= 3.0
    monkeypatch.setattr(indian_pines, "load_source", lambda source: (perturbed, gt, files))
    monkeypatch.setattr(indian_pines, "verify_array", lambda *args: "skipped")
    changed = indian_pines.prepare(params)
    assert changed.extra["band_mean"] == reference.extra["band_mean"]
    assert changed.extra["band_std"] == reference.extra["band_std"]
    assert all(np.array_equal(changed.arrays[s], reference.arrays[s]) for s in ("train", "val", "test"))


def test_bad_input_never_half_writes_a_run(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)
    assert main(["prepare", "--dataset", "tiny"]) == 0
    write_params(in_tmp, merge(tiny_params, {"methods": {"branchynet": {"weights": [1.0, 2.0]}}}))
    assert main(["train", "--dataset", "tiny", "--method", "branchynet", "--seed", "0"]) == 2
    assert not (in_tmp / "results/runs/tiny/branchynet/tiny_cnn/seed0/metrics.json").exists()
    from bench.config import load_params

    with pytest.raises(BenchError, match=r"methods\.branchynet"):  # rejected by validation, before any training
        load_params(in_tmp / "params.yaml")
    assert not (in_tmp / "results/runs/tiny/branchynet").exists()


STALE = ".checkpoint.pt.k3x9_q2a.tmp"  # the name a write killed half-way leaves (bench/io.py's atomic_path)


class Stop(Exception):
    pass


def stop(*args, **kwargs):  # stands in for the stage's work: the clean-up must already have happened
    raise Stop()


STAGES = {  # command, folder its stage writes to, the function doing the work after the clean-up
    "prepare": (["prepare", "--dataset", "tiny"], "datasets/tiny", "bench.data.prepare_dataset"),
    "train": (["train", "--dataset", "tiny", "--method", "joint", "--seed", "0"], "results/runs/tiny/joint/tiny_cnn/seed0",
              "bench.plan.plan_grid"),  # the train command plans right after cleaning (the executor catches crashes)
    "evaluate": (["evaluate", "--dataset", "tiny", "--method", "joint"], "results/eval/tiny/joint/tiny_cnn",
                 "bench.evaluate.thresholds.evaluate_run"),
    "tune": (["tune", "--dataset", "tiny", "--method", "joint"], "results/tune/tiny/joint/tiny_cnn/seed0",
             "bench.tune.run.tune_run"),
    "aggregate": (["aggregate"], "results", "bench.analyse.aggregate.aggregate"),
    "figures": (["figures"], "figures", "bench.analyse.figures.make_figures"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_removes_stale_temp_files_before_it_writes(in_tmp, tiny_params, monkeypatch, capsys, stage):
    argv, folder, work = STAGES[stage]
    write_params(in_tmp, tiny_params)
    if stage == "train":
        assert main(["prepare", "--dataset", "tiny"]) == 0
    stale, kept = in_tmp / folder / STALE, in_tmp / folder / "notes.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"")
    kept.write_text("not ours")
    module, name = work.rsplit(".", 1)
    monkeypatch.setattr(module + "." + name, stop)
    with pytest.raises(Stop):
        main(argv)
    assert not stale.exists() and kept.read_text() == "not ours"
    assert f"removed {stale.relative_to(in_tmp)}" in capsys.readouterr().out


def test_remove_stale_temps_takes_only_atomic_path_names(tmp_path):
    from bench.io import atomic_path, remove_stale_temps

    with atomic_path(tmp_path / "deep" / "pareto.csv") as tmp:  # a name atomic_path really generates
        generated = tmp.name
    names = [generated, ".pareto.csv.abcd1234.tmp", ".x.tmp", "a.k3x9_q2a.tmp", ".a.k3x9_q2a.tmp.bak", "metrics.json"]
    for name in names:
        (tmp_path / "deep" / name).write_bytes(b"")
    assert remove_stale_temps(tmp_path, recursive=False) == []
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([generated, ".pareto.csv.abcd1234.tmp"])
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == sorted(names[2:] + ["pareto.csv"])


@pytest.mark.parametrize("with_dvcignore", [True, False])
def test_dvcignore_keeps_temp_files_out_of_a_stage_output(tmp_path, with_dvcignore):
    from pathlib import Path

    from bench.study import dvc

    root = Path(__file__).resolve().parents[1]
    dvc(tmp_path, "init", "--no-scm", "-q")
    if with_dvcignore:
        (tmp_path / ".dvcignore").write_text((root / ".dvcignore").read_text())
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: mkdir -p out && echo 1 > out/a.json && touch out/" + STALE
        + "\n    outs:\n      - out\n")
    dvc(tmp_path, "repro", "-q")
    import yaml

    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["make"]["outs"][0]["nfiles"] == (1 if with_dvcignore else 2)


def test_a_truncated_checkpoint_is_one_line_naming_it_and_the_fix(tmp_path):
    from bench.io import save_torch
    from bench.train.engine import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_torch(path, {"identity": "abc", "model": {"w": torch.zeros(1000)}})
    assert load_checkpoint(path, "abc")["identity"] == "abc"  # the intact file loads
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BenchError) as caught:
        load_checkpoint(path, "abc")
    message = str(caught.value)
    assert str(path) in message and "delete it" in message and "\n" not in message


def test_a_truncated_indian_pines_array_is_one_line_naming_it(tmp_path, monkeypatch):
    import tensorly

    from bench.data import indian_pines

    data = tmp_path / "datasets" / "data"
    data.mkdir(parents=True)
    np.save(data / "Indian_pines_gt.npy", np.zeros((4, 4), dtype=np.uint8))
    np.save(data / "Indian_pines_corrected.npy", np.zeros((4, 4, 200), dtype=np.uint16))
    cube = data / "Indian_pines_corrected.npy"
    cube.write_bytes(cube.read_bytes()[:-100])  # header intact, data cut short
    monkeypatch.setattr(tensorly, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(BenchError) as caught:
        indian_pines.load_tensorly()
    message = str(caught.value)
    assert str(cube) in message and "tensorly" in message and "\n" not in message
