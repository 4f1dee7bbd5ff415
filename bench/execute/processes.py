"""`processes`: N local worker processes (spawned, so each starts clean), each running one run at a time with
train.common.threads threads (or train.executor.threads_per_worker). Each run's output goes to its own log."""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from bench.execute import EXECUTORS, Outcome
from bench.execute.local import failure, interrupted_by, key, label, outcome

LOGS = Path(".eebench") / "logs"


def log_path(root: Path, run) -> Path:
    return root / LOGS / f"{run.dataset}-{run.model}-{run.method}-s{run.seed}.log"


def idle_worker() -> None:
    """Pool initializer: a worker between runs ignores Ctrl-C (the parent handles it, and a worker interrupted
    while waiting for work would print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted(signum, frame) -> None:
    """Ctrl-C in a run: stop it, once; a second SIGINT (the terminal's and the parent's both arrive) must not cut
    the clean-up short (the run's RUNNING.json marker is removed on the way out)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def work(params: dict, dataset: str, model: str, method: str, seed: int, root: str, log: str) -> dict:
    """One run in a worker process, its stdout and stderr (file descriptors 1 and 2) sent to `log`. Ctrl-C (or
    the parent's SIGINT) stops the run: KeyboardInterrupt goes back to the parent as the run's result."""
    from bench.execute.unit import execute

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1), os.dup2(handle.fileno(), 2)
        try:
            signal.signal(signal.SIGINT, interrupted)
            metrics = execute(params, dataset, model, method, seed, Path(root), progress=False, executor="processes")
            return {"status": metrics.get("status"), "reason": metrics.get("reason", "")}
        except Exception as exc:  # noqa: BLE001 - reported as the run's failure, with its log
            if interrupted_by(exc):
                raise KeyboardInterrupt from exc
            import traceback

            traceback.print_exc()
            return {"status": "failed", "reason": failure(exc)}
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Interrupt every worker's run (SIGINT: each removes its RUNNING.json marker on the way out), drop the
    queued runs and wait for the workers to exit."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            os.kill(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    pool.shutdown(wait=True, cancel_futures=True)


@EXECUTORS.register("processes")
class Processes:
    def __init__(self, settings: dict):
        self.workers = settings["workers"]

    def parallelism(self, n: int) -> int:
        return min(self.workers, n)

    def describe(self) -> str:
        return f"{self.workers} worker process(es); logs in {LOGS}/"

    def check(self, params: dict, todo: list, root: Path) -> None:
        pass

    def run(self, params: dict, todo: list, root: Path, progress, verbose: bool) -> list[Outcome]:
        outcomes, waiting = [], list(todo)
        pool = ProcessPoolExecutor(max_workers=self.parallelism(len(todo)), mp_context=get_context("spawn"),
                                   initializer=idle_worker)
        try:
            running = {}
            while waiting or running:
                while waiting and len(running) < self.workers:  # feed the pool only as workers free up, so
                    run = waiting.pop(0)                        # "running" in the progress lines is exact
                    log = log_path(root, run)
                    running[pool.submit(work, params, *key(run), str(root), str(log))] = run
                    progress.start(run, f"{label(run)} ({run.state}) log {log}")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    run = running.pop(future)
                    log = str(log_path(root, run))
                    try:
                        result = outcome(run, future.result(), log)
                    except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                        result = Outcome(key(run), False,
                                         f"worker died ({type(exc).__name__}: {exc})", log)
                    progress.finish(run, label(run) + ("" if result.ok else f": {result.reason} (log {log})"),
                                    result.ok)
                    outcomes.append(result)
        except KeyboardInterrupt:  # Ctrl-C: stop the runs in progress (a terminal signals the workers too; a
            stop_workers(pool)      # `kill -INT` of this process alone does not), wait for their clean-up
            raise
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return outcomes
