"""The unit of work: one run of the grid, by (dataset, model, method, seed), importable by reference so that every
executor (in-process, worker processes, SLURM jobs) calls the same function."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

from bench.identity import run_identity
from bench.io import write_json
from bench.paths import DATASETS, run_dir
from bench.plan import MARKER


def execute(params: dict, dataset: str, model: str, method: str, seed: int, root: Path = Path("."), progress: bool = False,
            *, executor: str = "local", job_id: str | None = None) -> dict:
    """Train one run of validated `params` in `root` (the study folder) and return its metrics.json record.
    While it trains, `<run_dir>/RUNNING.json` says who trains it (pid, host, executor, job id); the marker is
    removed however the run ends (a killed process leaves it, and the planner then checks the pid)."""
    from bench.config import setting
    from bench.data import load_prepared
    from bench.train.engine import RunSpec, train_run

    root = Path(root)
    data = load_prepared(dataset, root / DATASETS)
    spec = RunSpec(dataset=dataset, method=method, seed=seed, method_params=params["methods"][method],
                   common=params["train"]["common"], settings=setting(params, dataset, model))
    identity = run_identity(params, dataset, model, method, seed, root)
    folder = root / run_dir(dataset, model, method, seed)
    marker = folder / MARKER
    write_json(marker, {"pid": os.getpid(), "host": socket.gethostname(), "executor": executor, "job_id": job_id,
                        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    try:
        return train_run(spec, data, folder, identity, progress=progress)
    finally:
        marker.unlink(missing_ok=True)
