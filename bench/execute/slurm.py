"""`slurm`: every run a SLURM job submitted through submitit (the first batch as one job array), with partition,
time limit, CPUs, GPUs, memory and extra sbatch options from train.executor.slurm; each job's log under
<root>/.eebench/slurm/. A job that dies (scancel, node failure, time limit) is resubmitted, up to max_retries
times, and resumes from the run's last checkpoint; Ctrl-C cancels every job this process submitted.
Job states come from squeue (sacct needs a SLURM database, which a small cluster may not have)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.errors import BenchError
from bench.execute import EXECUTORS, Outcome
from bench.execute.local import key, label

LOGS = Path(".eebench") / "slurm"
POLL_S = 1.0
LOCAL_CLUSTER_CONF = Path(__file__).resolve().parents[2] / ".eebench" / "cluster" / "slurm.conf"  # make cluster


def job(params: dict, dataset: str, model: str, method: str, seed: int, root: str) -> dict:
    """What one SLURM job runs (submitit pickles it by reference): the unit of work, with its timings."""
    import socket

    import submitit

    from bench.execute.unit import execute

    started = time.time()
    job_id = submitit.JobEnvironment().job_id
    metrics = execute(params, dataset, model, method, seed, Path(root), progress=False, executor="slurm", job_id=job_id)
    return {"status": metrics.get("status"), "reason": metrics.get("reason", ""), "job_id": job_id,
            "host": socket.gethostname(), "started": started, "finished": time.time()}


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no message"])[-1 if errors else 0]


def slurm_command(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"SLURM controller unreachable: `{' '.join(args)}` gave no answer in {timeout:.0f} s; "
                         "check that slurmctld runs (sinfo) and SLURM_CONF points at its slurm.conf") from None


def alive_jobs() -> dict[str, str]:
    """{job id: state} of every job SLURM still knows as pending/running/completing (array tasks one by one)."""
    result = slurm_command("squeue", "-h", "-r", "-o", "%i %T")
    if result.returncode != 0:
        raise BenchError(f"SLURM controller unreachable (squeue: {first_line(result.stderr)}); the submitted jobs "
                         "keep running: follow them with squeue and rerun `eebench run` when it answers again")
    return dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())


FINISHED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED", "REVOKED"}  # squeue states of a job that no longer runs (the others: pending, running, ...)


def use_local_cluster() -> None:
    """Point SLURM's tools at the cluster `make cluster` started when nothing else is configured."""
    if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").is_file() \
            and LOCAL_CLUSTER_CONF.is_file():
        os.environ["SLURM_CONF"] = str(LOCAL_CLUSTER_CONF)


class JobCheck:
    """Whether the SLURM jobs named by RUNNING.json markers still exist, for the planner. `status(job_id)` is
    ("alive", state) while the job is queued or running, ("gone", why) once it ended or SLURM no longer knows it
    (or there is no SLURM here), ("unknown", why) when the controller does not answer (the marker is then
    trusted). One squeue per job; after one timeout, none more (a plan must not wait `timeout` s for each)."""

    def __init__(self, timeout: float = 5.0):
        self.timeout, self.unreachable = timeout, ""

    def status(self, job_id: str) -> tuple[str, str]:
        if self.unreachable:
            return "unknown", self.unreachable
        use_local_cluster()
        try:
            result = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                                    timeout=self.timeout)
        except FileNotFoundError:
            return "gone", "squeue not found: no SLURM on this machine to run it"
        except subprocess.TimeoutExpired:
            self.unreachable = f"squeue gave no answer in {self.timeout:.0f} s"
            return "unknown", self.unreachable
        states = result.stdout.split()
        if result.returncode == 0 and states:
            return ("gone", f"it ended {states[0]}") if states[0] in FINISHED else ("alive", states[0])
        if result.returncode == 0 or "invalid job id" in result.stderr.lower():
            return "gone", ("no longer in SLURM's queue: it ended without clearing its marker (cancelled, timed out "
                            "or killed)")
        return "unknown", first_line(result.stderr)


def job_state(job_id: str) -> str:
    """The final state SLURM records for a finished job (CANCELLED, TIMEOUT, NODE_FAIL, ...), when it still knows."""
    result = slurm_command("scontrol", "show", "job", job_id)
    for field in result.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "gone"


def drop_marker(run, job_id: str) -> None:
    """Remove the RUNNING.json a dead job left (the planner would find the job gone; its executor knows first)."""
    from bench.io import read_json
    from bench.plan import MARKER

    marker = run.run_dir / MARKER
    try:
        record = read_json(marker)
    except (FileNotFoundError, BenchError):  # none, or damaged: the planner reports a damaged one
        return
    if isinstance(record, dict) and str(record.get("job_id")) == str(job_id):
        marker.unlink(missing_ok=True)


@EXECUTORS.register("slurm")
class Slurm:
    def __init__(self, settings: dict):
        self.settings = settings["slurm"]
        self.submitted: dict[str, object] = {}  # job id -> run, of jobs not known to be over

    def parallelism(self, n: int) -> int:
        return min(n, self.settings["array_parallelism"])

    def describe(self) -> str:
        part = self.settings["partition"] or "the default partition"
        return f"SLURM jobs on {part}, time limit {self.settings['time_min']} min; logs in {LOGS}/"

    def check(self, params: dict, todo: list, root: Path) -> None:
        """Everything that can be known before submitting: submitit, sbatch, a controller, the partition."""
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise BenchError("the slurm executor needs submitit, which is not installed; install it with "
                             "`pip install submitit` (or `pip install -e '.[slurm]'`)") from None
        if shutil.which("sbatch") is None:
            raise BenchError("sbatch not found: the slurm executor needs SLURM's client tools on PATH (Debian: "
                             "apt-get install slurm-client; a local test cluster: apt-get install slurm-wlm munge && "
                             "make cluster), or choose another executor (--executor local|processes)")
        use_local_cluster()
        result = slurm_command("sinfo", "-h", "-o", "%P")
        if result.returncode != 0:
            raise BenchError(f"SLURM controller unreachable (sinfo: {first_line(result.stderr)}); start it "
                             "(`make cluster` for the local one) or point SLURM_CONF at the cluster's slurm.conf")
        partitions = [p.rstrip("*") for p in result.stdout.split()]
        wanted = self.settings["partition"]
        if wanted is not None and wanted not in partitions:
            raise BenchError(f"SLURM partition {wanted!r} does not exist on this cluster; set "
                             f"train.executor.slurm.partition to one of: {', '.join(partitions) or '(none)'}")

    def executor(self, root: Path, threads: int):
        import submitit

        s = self.settings
        executor = submitit.SlurmExecutor(folder=root / LOGS / "%j", max_num_timeout=0)
        options = {"job_name": "eebench", "time": s["time_min"], "cpus_per_task": s["cpus_per_task"] or threads,
                   "array_parallelism": s["array_parallelism"], "additional_parameters": dict(s["additional_parameters"])}
        if s["partition"]:
            options["partition"] = s["partition"]
        if s["gpus_per_node"]:
            options["gpus_per_node"] = s["gpus_per_node"]
        if s["mem_gb"]:
            options["mem"] = f"{s['mem_gb']}GB"
        executor.update_parameters(**options)
        return executor

    def submit(self, executor, params: dict, runs: list, root: Path) -> list:
        """Submit `runs` (several: one job array); a submission sbatch refuses is a one-line BenchError."""
        try:
            if len(runs) == 1:
                jobs = [executor.submit(job, params, *key(runs[0]), str(root))]
            else:
                with executor.batch():
                    jobs = [executor.submit(job, params, *key(r), str(root)) for r in runs]
        except Exception as exc:  # noqa: BLE001 - submitit wraps sbatch's refusal in several types
            raise BenchError(f"SLURM refused the job(s): {first_line(exc)}; fix train.executor.slurm "
                             "(partition, time_min, cpus_per_task, mem_gb, additional_parameters) or the cluster") from None
        for j, run in zip(jobs, runs):
            self.submitted[j.job_id] = run
        return jobs

    def cancel_all(self, why: str) -> None:
        ids = list(self.submitted)
        if not ids:
            return
        subprocess.run(["scancel", *ids], capture_output=True, text=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and set(ids) & set(alive_jobs()):
            time.sleep(0.5)
        for job_id, run in self.submitted.items():
            drop_marker(run, job_id)
        print(f"cancelled {len(ids)} SLURM job(s) ({why}): {' '.join(ids)}", flush=True)
        self.submitted.clear()

    def run(self, params: dict, todo: list, root: Path, progress, verbose: bool) -> list[Outcome]:
        from submitit.core.utils import pickle_load

        executor = self.executor(root, params["train"]["common"]["threads"])
        retries = {id(run): 0 for run in todo}
        outcomes, watching = [], {}
        try:
            for j, run in zip(self.submit(executor, params, todo, root), todo):
                watching[j.job_id] = (j, run, False, time.time())
            progress.note(f"submitted {len(todo)} job(s) ({watching and next(iter(watching))}...); "
                          f"logs: {root / LOGS}/<job id>/")
            while watching:
                time.sleep(POLL_S)
                alive = alive_jobs()
                for job_id, (j, run, started, submitted) in list(watching.items()):
                    log = str(j.paths.stdout)
                    if not started and alive.get(job_id) in ("RUNNING", "COMPLETING"):
                        watching[job_id] = (j, run, True, submitted)
                        progress.start(run, f"{label(run)} as job {job_id} ({run.state}; log {log})")
                        continue
                    if j.paths.result_pickle.exists():
                        kind, value = pickle_load(j.paths.result_pickle)
                        if kind == "success" and value.get("status") == "ok":
                            result = Outcome(key(run), True, log=log, metrics=value)
                        else:
                            reason = value.get("reason") if kind == "success" else first_line(value)
                            result = Outcome(key(run), False, str(reason), log)
                    elif job_id in alive:
                        continue
                    else:  # gone from the queue without a result: it died
                        time.sleep(POLL_S)  # a result written as the job left the queue
                        if j.paths.result_pickle.exists():
                            continue
                        state = job_state(job_id)
                        drop_marker(run, job_id)
                        del watching[job_id]
                        self.submitted.pop(job_id, None)
                        if retries[id(run)] < self.settings["max_retries"]:
                            retries[id(run)] += 1
                            (new,) = self.submit(executor, params, [run], root)
                            watching[new.job_id] = (new, run, started, time.time())
                            progress.note(f"job {job_id} of {label(run)} ended {state} without a result (log {log}); "
                                          f"resubmitted as job {new.job_id} (retry {retries[id(run)]}/"
                                          f"{self.settings['max_retries']}), it resumes from the last checkpoint")
                            continue
                        result = Outcome(key(run), False,
                                         f"job {job_id} ended {state} without a result, {retries[id(run)]} "
                                         "resubmission(s) used", log)
                    watching.pop(job_id, None)
                    self.submitted.pop(job_id, None)
                    if not started:
                        progress.start(run, f"{label(run)} as job {job_id} ({log})")
                    progress.finish(run, label(run) + ("" if result.ok else f": {result.reason} (log {log})"), result.ok)
                    outcomes.append(result)
        except BaseException as exc:
            self.cancel_all("interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {first_line(exc)}")
            raise
        return outcomes
