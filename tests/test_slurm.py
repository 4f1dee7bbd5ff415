"""The `slurm` executor on a real SLURM cluster (`make cluster` starts a single-node one on localhost): results
byte-identical to `local`, a job scancel'ed mid-run is resubmitted and resumes from its checkpoint, and a bad
partition, an unreachable controller or a job sbatch refuses are one-line errors that submit and write nothing.
Without a reachable cluster these tests skip with the reason; EEBENCH_REQUIRE_SLURM=1 (set by .ci/run) makes
that a failure, so CI runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.execute import executor_settings
from bench.execute.slurm import LOGS, Slurm, alive_jobs
from bench.plan import MARKER, plan_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_executors import assert_same_runs, execute_grid, prepared_study, small_params  # noqa: E402


@pytest.fixture(scope="module")
def cluster(real_params):
    """Skip (or, under EEBENCH_REQUIRE_SLURM=1, fail) unless submitit, sbatch and a controller are there."""
    try:
        Slurm(executor_settings(small_params(real_params), "slurm")).check({}, [], Path("."))
    except BenchError as exc:
        if os.environ.get("EEBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"EEBENCH_REQUIRE_SLURM=1 but no SLURM cluster is usable: {exc}")
        pytest.skip(f"no SLURM cluster reachable ({exc})")
    return os.environ["SLURM_CONF"] if "SLURM_CONF" in os.environ else None


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, real_params):
    params = small_params(real_params)
    folder = prepared_study(tmp_path_factory.mktemp("local"), params)
    assert all(o.ok for o in execute_grid(params, folder, "local")[0])
    return params, folder


def test_slurm_byte_identical_to_local(cluster, local_reference, tmp_path):
    params, reference = local_reference
    folder = prepared_study(tmp_path / "slurm", params, reference)
    outcomes, lines = execute_grid(params, folder, "slurm")
    assert sorted((o.key, o.ok) for o in outcomes) == [(("tiny", "tiny_cnn", "branchynet", 0), True), (("tiny", "tiny_cnn", "joint", 0), True)]
    assert assert_same_runs(reference, folder, params) == 2
    assert {r.state for r in plan_grid(params, folder)} == {"done"}  # and no RUNNING.json left behind
    assert any(f"logs: {folder / LOGS}/" in line for line in lines)
    for o in outcomes:  # each job's own log, under the study's .eebench/slurm/<job id>/
        assert Path(o.log).is_file() and Path(o.log).parent.parent == folder / LOGS
        assert o.metrics["job_id"] and o.metrics["started"] <= o.metrics["finished"]


def test_scancelled_job_is_resubmitted_and_resumes(cluster, real_params, tmp_path):
    """A 10-epoch run on a larger tiny set; its job is scancel'ed once a checkpoint exists (a job outlives SIGTERM
    by SLURM's KillWait, 2 s in cluster/slurm.conf.in, so the rest of the run must take longer); a new job resumes it."""
    params = small_params(real_params, {"grid": {"methods": ["branchynet"]}, "prepare": {"tiny": {"n_train": 8192}},
                                        "train": {"tiny": {"epochs": 10}}})
    folder = prepared_study(tmp_path, params)
    run_dir = plan_grid(params, folder)[0].run_dir
    result: dict = {}
    slurm = {**executor_settings(params, "slurm")["slurm"], "max_retries": 1}

    def execute() -> None:
        result["outcomes"], result["lines"] = execute_grid(params, folder, "slurm", slurm=slurm)

    worker = threading.Thread(target=execute)
    worker.start()
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    marker = json.loads((run_dir / MARKER).read_text())
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be cancelled; enlarge it"
    subprocess.run(["scancel", marker["job_id"]], check=True)
    worker.join(timeout=180)
    assert not worker.is_alive()
    (outcome,) = result["outcomes"]
    assert any(f"job {marker['job_id']} of branchynet/tiny/tiny_cnn/s0 ended CANCELLED without a result" in line
               and "resubmitted as job" in line for line in result["lines"])
    assert outcome.ok and outcome.metrics["job_id"] != marker["job_id"]  # finished by another job
    log = Path(outcome.log).read_text()
    assert "resuming branchynet/tiny/s0 after epoch " in log and "after epoch 0/" not in log
    assert plan_grid(params, folder)[0].state == "done"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"


def assert_nothing_submitted_or_written(before: set, folder: Path, params: dict) -> None:
    assert set(alive_jobs()) <= before
    assert not (folder / LOGS).exists()
    assert {r.state for r in plan_grid(params, folder)} == {"missing"}
    assert not list(folder.glob("results/runs/*/*/*/RUNNING.json"))


def test_missing_partition_is_one_line(cluster, local_reference, tmp_path):
    params, reference = local_reference
    folder = prepared_study(tmp_path, params, reference)
    before = set(alive_jobs())
    with pytest.raises(BenchError, match=r"^SLURM partition 'nope' does not exist on this cluster; set "
                                         r"train\.executor\.slurm\.partition to one of: \w+"):
        execute_grid(params, folder, "slurm", slurm={**executor_settings(params, "slurm")["slurm"], "partition": "nope"})
    assert_nothing_submitted_or_written(before, folder, params)


def test_job_sbatch_refuses_is_one_line(cluster, local_reference, tmp_path):
    params, reference = local_reference
    folder = prepared_study(tmp_path, params, reference)
    before = set(alive_jobs())
    with pytest.raises(BenchError, match=r"^SLURM refused the job\(s\): sbatch: error: .*; fix train\.executor\.slurm"):
        execute_grid(params, folder, "slurm", slurm={**executor_settings(params, "slurm")["slurm"], "mem_gb": 10**6})
    assert set(alive_jobs()) <= before
    assert {r.state for r in plan_grid(params, folder)} == {"missing"}


def test_unreachable_controller_is_one_line(cluster, local_reference, tmp_path, monkeypatch):
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    bad = tmp_path / "slurm.conf"  # the same cluster, but a controller port nobody listens on
    bad.write_text("".join(("SlurmctldPort=9\n" if line.startswith("SlurmctldPort=") else line + "\n")
                           for line in conf.splitlines()) + "MessageTimeout=1\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    params, reference = local_reference
    folder = prepared_study(tmp_path / "study", params, reference)
    with pytest.raises(BenchError, match=r"^SLURM controller unreachable \(sinfo: .*\); start it \(`make cluster`"):
        execute_grid(params, folder, "slurm")
    assert not (folder / LOGS).exists()


def test_missing_sbatch_or_submitit_is_one_line(real_params, monkeypatch):
    """No cluster needed: what a machine without SLURM's tools or without submitit gets."""
    settings = executor_settings(small_params(real_params), "slurm")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BenchError, match=r"^sbatch not found: the slurm executor needs SLURM's client tools on PATH"):
        Slurm(settings).check({}, [], Path("."))
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(BenchError, match=r"needs submitit, which is not installed; install it with `pip install submitit`"):
        Slurm(settings).check({}, [], Path("."))
