"""The plan: every run of the grid with its state, from small files only (metrics.json, RUNNING.json), never a
checkpoint. `done` = finished with the identity the run has now; `stale` = finished or failed with another
identity (the reason names what changed, or that metrics.json is damaged); `missing`; `failed` (the failure
record's reason, or a trainer gone without finishing: a SLURM job no longer in the queue, a dead pid, a damaged
marker); `running` (a RUNNING.json marker whose SLURM job or pid still lives). `eebench train` executes what is
not done, `eebench plan` shows it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bench.config import models_of, seeds_of, setting
from bench.errors import BenchError
from bench.identity import (COMPONENTS, code_identity, compose, data_identity, dataset_module, method_module,
                            run_key, sha256_json, why_different)
from bench.io import read_json
from bench.paths import run_dir

STATES = ("done", "stale", "missing", "failed", "running")
MARKER = "RUNNING.json"


@dataclass(frozen=True)
class PlannedRun:
    dataset: str
    model: str
    method: str
    seed: int
    state: str
    reason: str
    run_dir: Path
    digest: str

    def as_dict(self) -> dict:
        return {**self.__dict__, "run_dir": str(self.run_dir)}


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def marker_state(folder: Path, jobs=None) -> tuple[str, str] | None:
    """What the run's RUNNING.json marker says: ("running", who) while its trainer lives (a SLURM job still queued or
    running, or a pid alive on this host); ("gone", why) when that job or process no longer exists or the marker is
    damaged; None without a marker (or with a pid on another host, which cannot be checked from here). `jobs`: a
    bench.execute.slurm.JobCheck, shared by the runs of one plan."""
    path = folder / MARKER
    unknown = "so whether a process still trains this run is unknown; `eebench run` retrains it"
    try:
        marker = read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (BenchError, OSError):
        return "damaged", f"{MARKER} is damaged (not a JSON record), {unknown}"
    if not isinstance(marker, dict):
        return "damaged", f"{MARKER} is not a marker record, {unknown}"
    since = f"since {marker.get('started')}"
    executor = marker.get("executor", "local")
    if marker.get("job_id"):
        if jobs is None:
            from bench.execute.slurm import JobCheck

            jobs = JobCheck()
        kind, detail = jobs.status(str(marker["job_id"]))
        if kind == "gone":
            return "gone", f"SLURM job {marker['job_id']} is gone ({detail})"
        state = f"{detail}, " if kind == "alive" else ""
        note = f"; state unknown: {detail}" if kind == "unknown" else ""
        return "running", f"{executor} job {marker['job_id']} ({state}{since}{note})"
    if marker.get("host") != socket.gethostname():
        return None
    if pid_alive(marker.get("pid")):
        return "running", f"pid {marker['pid']} on {marker['host']} ({executor}) {since}"
    return "gone", f"pid {marker.get('pid')} on {marker['host']} is gone (its {executor} run was stopped {since})"


def record_state(folder: Path, identity: dict, dataset: str, method: str) -> tuple[str, str]:
    """(state, reason) from the run's metrics.json against the identity it would have now."""
    try:
        record = read_json(folder / "metrics.json", "`eebench run` (or the train stage) retrains it")
    except FileNotFoundError:
        partial = (folder / "checkpoint.pt").is_file()
        return "missing", "unfinished: checkpoint.pt kept (resumed if its identity matches)" if partial else "never trained"
    except BenchError as exc:
        return "stale", f"metrics.json damaged: {exc}"
    except OSError as exc:
        return "stale", f"metrics.json unreadable ({exc.strerror or exc.__class__.__name__})"
    if not isinstance(record, dict):
        return "stale", "metrics.json is not a run record"
    if record.get("status") == "failed":
        return "failed", str(record.get("reason", "no reason recorded"))
    recorded = record.get("identity")
    if record.get("status") == "ok" and isinstance(recorded, dict) and recorded.get("digest") == identity["digest"]:
        return "done", ""
    return "stale", why_different(recorded, identity, dataset, method)


def run_state(folder: Path, identity: dict, dataset: str, method: str, jobs=None) -> tuple[str, str]:
    """(state, reason) of one run folder: `running` while a live trainer holds its marker, otherwise what its
    metrics.json says; a trainer that is gone (or a damaged marker) is named in the reason of a run it did not
    finish, which is `failed` when it left something (a checkpoint, a damaged marker) and `missing` when not."""
    marker = marker_state(folder, jobs)
    if marker is not None and marker[0] == "running":
        return marker
    state, reason = record_state(folder, identity, dataset, method)
    if marker is None or state == "done":  # finished: a marker left by a kill after the last write is harmless
        return state, reason
    why = marker[1]
    if state == "missing":
        if marker[0] == "damaged" or (folder / "checkpoint.pt").is_file():
            return "failed", f"{why}; {reason}"
        return "missing", f"{why}; nothing written"
    return state, f"{why}; {reason}"


def plan_grid(params: dict, root: Path = Path("."), datasets: list[str] | None = None,
              methods: list[str] | None = None, seeds: list[int] | None = None,
              models: list[str] | None = None) -> list[PlannedRun]:
    """Every run of validated `params`' grid (or of the given datasets / methods / seeds / models instead of the
    grid's; a model filter keeps each dataset's models among them) with its state. Each (method, dataset) code
    closure is hashed once, each dataset's manifest read once, each (dataset, model) setting hashed once."""
    from bench.execute.slurm import JobCheck

    grid = params["grid"]
    runs = []
    codes: dict[tuple[str, str], tuple[dict, str]] = {}
    jobs = JobCheck()  # asks SLURM only about the jobs that markers name
    closures: dict[str, list[Path]] = {}
    for dataset in datasets or grid["datasets"]:
        data = data_identity(dataset, root)
        for model in [m for m in models_of(params, dataset) if models is None or m in models]:
            shared = {"common": params["train"]["common"], "recipe": setting(params, dataset, model), "data": data}
            shared_hashes = {name: sha256_json(value) for name, value in shared.items()}
            for method in methods or grid["methods"]:
                modules = (method_module(method), dataset_module(dataset))
                if modules not in codes:
                    code = code_identity(*modules, closures=closures)
                    codes[modules] = code, sha256_json(code)
                code, code_hash = codes[modules]
                method_params = params["methods"][method]
                known = {**shared_hashes, "params": sha256_json(method_params), "code": code_hash}
                for seed in seeds if seeds is not None else seeds_of(grid, method):
                    components = {"run": run_key(dataset, model, method, seed), **shared, "params": method_params,
                                  "code": code}
                    identity = compose(components, known)
                    folder = root / run_dir(dataset, model, method, seed)
                    state, reason = run_state(folder, identity, dataset, method, jobs)
                    runs.append(PlannedRun(dataset, model, method, seed, state, reason, folder, identity["digest"]))
    return runs


def counts(runs: list[PlannedRun]) -> dict[str, int]:
    return {state: sum(run.state == state for run in runs) for state in STATES}


def format_plan(runs: list[PlannedRun]) -> str:
    header = ("dataset", "model", "method", "seed", "state", "reason")
    rows = [(r.dataset, r.model, r.method, str(r.seed), r.state, r.reason) for r in runs]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in [header, *rows]]
    total = counts(runs)
    lines.append(f"{len(runs)} runs: " + ", ".join(f"{n} {state}" for state, n in total.items()))
    return "\n".join(line.rstrip() for line in lines)


__all__ = ["PlannedRun", "plan_grid", "run_state", "counts", "format_plan", "STATES", "MARKER", "COMPONENTS"]
