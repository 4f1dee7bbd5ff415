"""`local`: in this process, one run after another (the default)."""

from __future__ import annotations

from pathlib import Path

from bench.execute import EXECUTORS, Outcome


def label(run) -> str:
    return f"{run.method}/{run.dataset}/{run.model}/s{run.seed}"


def key(run) -> tuple[str, str, str, int]:
    return run.dataset, run.model, run.method, run.seed


def interrupted_by(exc: BaseException | None) -> bool:
    """Whether Ctrl-C caused `exc`: Python wraps a KeyboardInterrupt raised inside some of its own machinery in
    another exception with the interrupt as its cause (seen: a RuntimeError "Error calling __set_name__ ..." when
    Ctrl-C landed in a class body of a module torch imports lazily at a run's first step). Such a run was
    interrupted, not failed."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def failure(exc: Exception) -> str:
    """A run's crash in one line: an OSError names the file and the fix (a full disk, a read-only folder)."""
    if isinstance(exc, OSError):
        from bench.artefacts import os_error

        return str(os_error(exc))
    return f"{type(exc).__name__}: {exc}"


def outcome(run, metrics: dict, log: str = "") -> Outcome:
    if metrics.get("status") == "ok":
        return Outcome(key(run), True, log=log, metrics=metrics)
    return Outcome(key(run), False, str(metrics.get("reason", "no reason recorded")), log, metrics)


@EXECUTORS.register("local")
class Local:
    def __init__(self, settings: dict):
        self.settings = settings

    def parallelism(self, n: int) -> int:
        return 1

    def describe(self) -> str:
        return "in this process, one after another"

    def check(self, params: dict, todo: list, root: Path) -> None:
        pass

    def run(self, params: dict, todo: list, root: Path, progress, verbose: bool) -> list[Outcome]:
        from bench.execute.unit import execute

        outcomes = []
        for run in todo:
            progress.start(run, f"{label(run)} ({run.state}{': ' + run.reason if run.reason else ''})")
            try:
                result = outcome(run, execute(params, *key(run), root, progress=verbose))
            except Exception as exc:  # noqa: BLE001 - one run's error must not stop the others
                if interrupted_by(exc):
                    raise KeyboardInterrupt from exc
                result = Outcome(key(run), False, failure(exc))
            progress.finish(run, label(run) + ("" if result.ok else f": {result.reason}"), result.ok)
            outcomes.append(result)
        return outcomes
