"""Executors (bench/execute/): `processes` gives results byte-identical to `local` (the in-process path, the
reference), a failing run reports its log and the others finish, bad executor settings are one-line errors,
and the progress lines' counts and ETA match a hand computation."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.config import validate
from bench.errors import BenchError
from bench.execute import EXECUTORS, executor_settings, report, run_all
from bench.execute.progress import Progress
from bench.plan import plan_grid
from bench.study import merge

SMALL = {  # two methods, one seed, one epoch of the tiny dataset, one thread: seconds per run
    "grid": {"methods": ["joint", "branchynet"], "datasets": ["tiny"], "seeds": [0], "extra_seed_methods": []},
    "train": {"tiny": {"epochs": 1}, "common": {"grad_stats_every": 4, "threads": 1}},
}
COMPARED = ("logits.pt", "model.pt", "metrics.json")
VARYING = ("time", "environment")  # wall times and the host: the only fields allowed to differ


def small_params(real_params: dict, override: dict | None = None) -> dict:
    return validate(merge(merge(copy.deepcopy(real_params), SMALL), override or {}))


def prepared_study(folder: Path, params: dict, source: Path | None = None) -> Path:
    """A study folder with the tiny dataset prepared (copied from `source` when given: same bytes)."""
    from bench.data import prepare_dataset

    folder.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copytree(source / "datasets", folder / "datasets")
    else:
        prepare_dataset("tiny", params["prepare"]["tiny"], folder / "datasets")
    return folder


def execute_grid(params: dict, folder: Path, name: str, **settings) -> tuple[list, list[str]]:
    lines: list[str] = []
    chosen = {**executor_settings(params, name), **settings}
    outcomes = run_all(params, plan_grid(params, folder), folder, chosen, out=lines.append)
    return outcomes, lines


def assert_same_runs(reference: Path, other: Path, params: dict) -> int:
    """Every run's weights and logits byte-identical (and equal as tensors); metrics.json equal but for times
    and the environment. Returns the number of runs compared."""
    runs = plan_grid(params, reference)
    for run in runs:
        a, b = run.run_dir, other / run.run_dir.relative_to(reference)
        for name in COMPARED:
            if name == "metrics.json":
                ma, mb = (json.loads((d / name).read_text()) for d in (a, b))
                assert ma["status"] == "ok"
                assert {k: v for k, v in ma.items() if k not in VARYING} == {k: v for k, v in mb.items() if k not in VARYING}
                continue
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} of {run.method} differs"
            assert_equal_tensors(*(torch.load(d / name, weights_only=True) for d in (a, b)), f"{run.method} {name}")
    return len(runs)


def assert_equal_tensors(a, b, where: str) -> None:
    """Nested dicts/lists of tensors: the same keys and exactly equal tensors (dtype, shape, values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_tensors(a[key], b[key], f"{where}[{key}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, real_params):
    """The small grid trained by the `local` executor: the in-process path every executor must reproduce."""
    params = small_params(real_params)
    folder = prepared_study(tmp_path_factory.mktemp("local"), params)
    outcomes, _ = execute_grid(params, folder, "local")
    assert [o.ok for o in outcomes] == [True, True]
    return params, folder


def test_processes_byte_identical_to_local(local_reference, tmp_path):
    params, reference = local_reference
    folder = prepared_study(tmp_path / "processes", params, reference)
    outcomes, lines = execute_grid(params, folder, "processes", workers=2)
    assert sorted(o.key for o in outcomes) == sorted(("tiny", "tiny_cnn", m, 0) for m in ("joint", "branchynet"))
    assert all(o.ok for o in outcomes)
    assert assert_same_runs(reference, folder, params) == 2
    assert {r.state for r in plan_grid(params, folder)} == {"done"}
    assert all("\r" not in line for line in lines) and lines[-1].startswith("[2/2] done ")
    for o in outcomes:  # one log per run
        assert Path(o.log).is_file() and Path(o.log).name == f"tiny-tiny_cnn-{o.key[2]}-s0.log"
    # a second pass trains nothing: every run is done
    assert execute_grid(params, folder, "processes", workers=2)[0] == []


def test_failing_run_reports_its_log_and_the_others_finish(local_reference, tmp_path):
    params, reference = local_reference
    broken = copy.deepcopy(params)
    broken["methods"]["joint"]["label_smoothing"] = "not a number"  # fails inside the worker (params not revalidated here)
    folder = prepared_study(tmp_path / "broken", params, reference)
    outcomes, lines = execute_grid(broken, folder, "processes", workers=2)
    by_method = {o.key[2]: o for o in outcomes}
    assert by_method["branchynet"].ok and not by_method["joint"].ok
    failed = by_method["joint"]
    assert failed.reason == "BenchError: methods.joint.label_smoothing must be float, got str 'not a number'"
    assert "label_smoothing must be float" in Path(failed.log).read_text()  # the worker's traceback
    assert any(line.startswith("[") and "FAILED joint/tiny/tiny_cnn/s0" in line and failed.log in line for line in lines)
    states = {r.method: r.state for r in plan_grid(broken, folder)}
    assert states == {"joint": "missing", "branchynet": "done"}  # nothing marked done that did not finish
    assert not (folder / "results/runs/tiny/joint/tiny_cnn/seed0/RUNNING.json").exists()
    with pytest.raises(BenchError, match=r"^1 run\(s\) failed: joint/tiny/tiny_cnn/s0: BenchError: methods.joint.label_smoothing.*\(log .*tiny-tiny_cnn-joint-s0\.log\)"):
        report(outcomes, out=lambda line: None)


def test_unknown_executor_is_one_line(real_params, tmp_path, monkeypatch, capsys):
    from bench.cli import main

    with pytest.raises(BenchError, match=r"unknown executor 'nope' \(at train\.executor\.name\); valid choices: "
                                         r"local, processes, slurm$"):
        small_params(real_params, {"train": {"executor": {"name": "nope"}}})
    params = small_params(real_params)
    with pytest.raises(BenchError, match=r"unknown executor 'nope'.*valid choices: local, processes, slurm"):
        executor_settings(params, "nope")
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    monkeypatch.chdir(Path(__file__).parents[1])  # params.yaml names files relative to the project
    assert main(["--params", str(tmp_path / "params.yaml"), "run", "--executor", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eebench: error: unknown executor 'nope'")


@pytest.mark.parametrize("bad, message", [
    ({"workers": 0}, r"train\.executor\.workers = 0 is out of range; allowed: an integer >= 1"),
    ({"threads_per_worker": 0}, r"train\.executor\.threads_per_worker = 0 is out of range"),
    ({"slurm": {"partition": ""}}, r"train\.executor\.slurm\.partition = '' is out of range"),
    ({"slurm": {"time_min": 0}}, r"train\.executor\.slurm\.time_min = 0 is out of range"),
    ({"slurm": {"mem_gb": -1}}, r"train\.executor\.slurm\.mem_gb = -1 is out of range"),
    ({"slurm": {"qos": "x"}}, r"unknown parameter train\.executor\.slurm\.qos; valid keys: additional_parameters"),
    ({"wrokers": 2}, r"unknown parameter train\.executor\.wrokers; valid keys: name, slurm"),
])
def test_bad_executor_settings_are_one_line(real_params, bad, message):
    with pytest.raises(BenchError, match=message):
        small_params(real_params, {"train": {"executor": bad}})


def test_executor_settings_do_not_change_run_identity(real_params, tmp_path):
    """Where a run trains is not what it is: the plan's digests ignore train.executor (but not the threads)."""
    from bench.execute import with_threads

    base = small_params(real_params)
    folder = prepared_study(tmp_path, base)
    other = small_params(real_params, {"train": {"executor": {"name": "slurm", "workers": 7, "slurm": {"mem_gb": 3}}}})
    assert [r.digest for r in plan_grid(base, folder)] == [r.digest for r in plan_grid(other, folder)]
    threads = with_threads(base, {"threads_per_worker": 2})
    assert threads["train"]["common"]["threads"] == 2 and base["train"]["common"]["threads"] == 1
    assert [r.digest for r in plan_grid(threads, folder)] != [r.digest for r in plan_grid(base, folder)]


def test_registry_lists_each_executor_module():
    assert EXECUTORS.names() == ["local", "processes", "slurm"]


def test_progress_counts_and_eta():
    """Four runs on two workers, a fake clock: the ETA is the mean run time times the runs left over the workers,
    less what the running ones have already spent (computed by hand below)."""
    now = [0.0]
    lines: list[str] = []
    progress = Progress(4, 2, lines.append, clock=lambda: now[0])
    progress.start("a", "a")
    progress.start("b", "b")
    assert lines[-1].endswith("queued 2, running 2, done 0, failed 0 | 0m00s elapsed, ETA unknown until a run finishes")
    now[0] = 60.0
    progress.finish("a", "a", True)  # mean 60 s; b has run 60 s (0 s left), c and d queued: (0 + 2*60) / 2 = 60 s
    assert lines[-1] == "[1/4] done a | queued 2, running 1, done 1, failed 0 | 1m00s elapsed, ETA 1m00s"
    progress.start("c", "c")
    now[0] = 90.0
    progress.finish("b", "b", False)  # mean (60 + 90) / 2 = 75; c ran 30 s (45 left), d queued: (45 + 75) / 2 = 60
    assert lines[-1] == "[2/4] FAILED b | queued 1, running 1, done 1, failed 1 | 1m30s elapsed, ETA 1m00s"
    assert all("\r" not in line for line in lines)
