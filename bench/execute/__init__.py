"""Executing runs: `bench.execute.unit.execute` trains one run of the grid; executors (local, processes, slurm),
one module each registered in EXECUTORS, call it for the runs the plan (bench/plan.py) says are not done.
`run_all` is the one entry point: `eebench run`, `eebench train` (a DVC stage's seeds) and `eebench study`."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.registry import Registry

NOT_EXECUTORS = {"unit", "progress"}  # modules of this package that are not executors


def discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in NOT_EXECUTORS:
            importlib.import_module(f"{__name__}.{module.name}")


EXECUTORS: Registry = Registry("executor", discover=discover)


@dataclass(frozen=True)
class Outcome:
    """How one run ended: ok (metrics.json written with status ok) or failed (reason; log where there is one)."""
    key: tuple[str, str, str, int]  # (dataset, model, method, seed)
    ok: bool
    reason: str = ""
    log: str = ""
    metrics: dict | None = None


def executor_settings(params: dict, name: str | None = None, workers: int | None = None) -> dict:
    """train.executor of validated params with the command line's --executor / --workers on top."""
    from bench.config import check_executor

    settings = dict(params["train"].get("executor") or check_executor(None))
    if name is not None:
        settings["name"] = name
    if workers is not None:
        settings["workers"] = workers
    return check_executor(settings)


def with_threads(params: dict, settings: dict) -> dict:
    """params whose train.common.threads is the executor's threads_per_worker when that is set. The thread count
    is part of every run's identity (it can change floating-point reductions), so the plan is made with it."""
    threads = settings.get("threads_per_worker")
    if threads is None or threads == params["train"]["common"]["threads"]:
        return params
    return {**params, "train": {**params["train"], "common": {**params["train"]["common"], "threads": threads}}}


def run_all(params: dict, runs: list, root: Path, settings: dict, out: Callable[[str], None] = print,
            verbose: bool = False) -> list[Outcome]:
    """Execute every run of `runs` (PlannedRun, from plan_grid with the same params) whose state is missing, stale
    or failed through the executor `settings` names; print progress lines through `out`. Returns the outcomes;
    a failed run does not stop the others. Runs another process trains (state `running`) are left alone."""
    from bench.execute.progress import Progress

    todo = [run for run in runs if run.state in ("missing", "stale", "failed")]
    executor = EXECUTORS.get(settings["name"], where="train.executor.name (or --executor)")(settings)
    if not todo:
        return []
    executor.check(params, todo, Path(root))  # bad settings or an unreachable cluster: BenchError before any run
    progress = Progress(len(todo), executor.parallelism(len(todo)), out)
    out(f"{settings['name']}: {len(todo)} run(s) to train ({executor.describe()})")
    return executor.run(params, todo, Path(root).resolve(), progress, verbose)


def report(outcomes: list[Outcome], out: Callable[[str], None] = print) -> None:
    """One line for what was trained; a BenchError naming every failed run with its reason and log."""
    failed = [o for o in outcomes if not o.ok]
    out(f"trained {len(outcomes) - len(failed)} run(s), {len(failed)} failed" if outcomes else "nothing to train: every run is done")
    if failed:
        listed = "; ".join(f"{m}/{d}/{model}/s{s}: {o.reason}" + (f" (log {o.log})" if o.log else "")
                           for o in failed for d, model, m, s in [o.key])
        raise BenchError(f"{len(failed)} run(s) failed: {listed}; fix the cause and rerun (done runs are kept)")


__all__ = ["EXECUTORS", "Outcome", "run_all", "report", "executor_settings", "with_threads"]
