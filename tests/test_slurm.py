"""The `slurm` executor on a real SLURM cluster (`make cluster` starts a single-node one on localhost): results
byte-identical to `local`, a job scancel'ed mid-run is resubmitted and resumes from its checkpoint, and a bad
partition, an unreachable controller or a job sbatch refuses are one-line errors that submit and write nothing;
the planner shows a RUNNING.json marker's job running only while SLURM has it, and Ctrl-C cancels the jobs.
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
from test_executors import SMALL, assert_same_runs, execute_grid, prepared_study, small_params  # noqa: E402


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
    assert "resuming branchynet/tiny/tiny_cnn/s0 after epoch " in log and "after epoch 0/" not in log
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


def sbatch_sleep(seconds: int) -> str:
    result = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-J", "eebench-test", "--wrap",
                             f"sleep {seconds}"], capture_output=True, text=True, check=True)
    return result.stdout.strip().split(";")[0]


def test_a_marker_is_running_while_its_job_lives_and_gone_after(cluster, local_reference, tmp_path):
    """The planner asks SLURM about a RUNNING.json marker's job: a real queued/running job keeps the run
    `running`; once scancel'ed (or for a job id SLURM never had) the run is `missing`, the reason naming the job."""
    params, reference = local_reference
    folder = prepared_study(tmp_path, params, reference)
    runs = plan_grid(params, folder)
    job_id = sbatch_sleep(120)
    try:
        marker = {"pid": 1, "host": "node7", "started": "t0", "executor": "slurm"}
        runs[0].run_dir.mkdir(parents=True)
        (runs[0].run_dir / MARKER).write_text(json.dumps({**marker, "job_id": job_id}))
        runs[1].run_dir.mkdir(parents=True)
        (runs[1].run_dir / MARKER).write_text(json.dumps({**marker, "job_id": "987654321"}))
        first, second = plan_grid(params, folder)
        assert first.state == "running" and f"slurm job {job_id} (" in first.reason
        assert second.state == "missing" and second.reason.startswith("SLURM job 987654321 is gone (no longer in")
    finally:
        subprocess.run(["scancel", job_id], check=True)
    deadline = time.monotonic() + 30
    while job_id in alive_jobs() and time.monotonic() < deadline:
        time.sleep(0.2)
    first = plan_grid(params, folder)[0]
    assert first.state == "missing" and first.reason.startswith(f"SLURM job {job_id} is gone ("), first.reason
    assert first.reason.endswith("; nothing written")


def test_ctrl_c_cancels_the_submitted_jobs(cluster, real_params, tmp_path):
    import copy
    import signal

    from bench.study import merge
    from tests.conftest import write_params
    from tests.test_interrupt import cli, group_gone

    raw = {"grid": {"methods": ["joint", "branchynet"]}, "prepare": {"tiny": {"n_train": 8192}},
           "train": {"tiny": {"epochs": 10}}}
    params = small_params(real_params, raw)
    folder = prepared_study(tmp_path, params)
    write_params(folder, merge(merge(copy.deepcopy(real_params), SMALL), raw))
    before = set(alive_jobs())
    process = cli(folder, "run", "--executor", "slurm")
    deadline = time.monotonic() + 120
    while not set(alive_jobs()) - before:  # submitted
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.2)
    submitted = set(alive_jobs()) - before
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130 and "eebench: interrupted" in out, out
    assert f"cancelled {len(params['grid']['methods'])} SLURM job(s) (interrupted)" in out, out
    assert not submitted & set(alive_jobs()) and group_gone(process.pid)
    assert not list(folder.rglob(MARKER)) and not list(folder.glob("results/runs/*/*/*/metrics.json"))
