"""The plan: every run of the grid with its state, from small files only (metrics.json, RUNNING.json), never a
checkpoint. `done` = finished with the identity the run has now; `stale` = finished or failed with another
identity (the reason names what changed); `missing`; `failed` (the failure record's reason); `running` (a live
RUNNING.json marker). `eebench train` executes what is not done, `eebench plan` shows it."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bench.config import models_of, seeds_of, setting
from bench.identity import (COMPONENTS, code_identity, compose, data_identity, dataset_module, method_module,
                            run_key, sha256_json, why_different)
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


def running_reason(folder: Path) -> str | None:
    """Why the run is being trained now, from its RUNNING.json marker; None when no live marker: a marker with a
    job id is trusted (its executor clears it), one with a pid only while that pid lives on this host."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    since = f"since {marker.get('started')}"
    if marker.get("job_id"):
        return f"{marker.get('executor', 'executor')} job {marker['job_id']} {since}"
    if marker.get("host") == socket.gethostname() and pid_alive(marker.get("pid")):
        return f"pid {marker['pid']} on {marker['host']} ({marker.get('executor', 'local')}) {since}"
    return None


def run_state(folder: Path, identity: dict, dataset: str, method: str) -> tuple[str, str]:
    """(state, reason) of one run folder against the identity it would have now."""
    running = running_reason(folder)
    if running is not None:
        return "running", running
    try:
        record = json.loads((folder / "metrics.json").read_bytes())
    except FileNotFoundError:
        partial = (folder / "checkpoint.pt").is_file()
        return "missing", "unfinished: checkpoint.pt kept (resumed if its identity matches)" if partial else "never trained"
    except (OSError, ValueError):
        return "stale", "metrics.json unreadable"
    if not isinstance(record, dict):
        return "stale", "metrics.json is not a run record"
    if record.get("status") == "failed":
        return "failed", str(record.get("reason", "no reason recorded"))
    recorded = record.get("identity")
    if record.get("status") == "ok" and isinstance(recorded, dict) and recorded.get("digest") == identity["digest"]:
        return "done", ""
    return "stale", why_different(recorded, identity, dataset, method)


def plan_grid(params: dict, root: Path = Path("."), datasets: list[str] | None = None,
              methods: list[str] | None = None, seeds: list[int] | None = None,
              models: list[str] | None = None) -> list[PlannedRun]:
    """Every run of validated `params`' grid (or of the given datasets / methods / seeds / models instead of the
    grid's; a model filter keeps each dataset's models among them) with its state. Each (method, dataset) code
    closure is hashed once, each dataset's manifest read once, each (dataset, model) setting hashed once."""
    grid = params["grid"]
    runs = []
    codes: dict[tuple[str, str], tuple[dict, str]] = {}
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
                    state, reason = run_state(folder, identity, dataset, method)
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
