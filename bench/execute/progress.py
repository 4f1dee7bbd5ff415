"""Progress of a batch of runs as whole lines (queued / running / done / failed, ETA), the same on a terminal and
in a CI log: no carriage returns, one line per change."""

from __future__ import annotations

import time
from typing import Callable


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    def __init__(self, total: int, parallelism: int, out: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.parallelism, self.out, self.clock = total, max(1, parallelism), out, clock
        self.started_at = clock()
        self.running: dict[object, float] = {}
        self.done = self.failed = 0
        self.spent: list[float] = []  # wall seconds of each finished run

    def eta(self) -> str:
        """Remaining wall time: the mean run time so far times the runs left, spread over the parallelism."""
        if not self.spent:
            return "ETA unknown until a run finishes"
        mean = sum(self.spent) / len(self.spent)
        left = self.total - self.done - self.failed
        now = self.clock()
        ahead = sum(max(0.0, mean - (now - t)) for t in self.running.values())  # what the running ones still need
        queued = left - len(self.running)
        return f"ETA {duration((ahead + queued * mean) / self.parallelism)}"

    def line(self, event: str) -> None:
        queued = self.total - self.done - self.failed - len(self.running)
        self.out(f"[{self.done + self.failed}/{self.total}] {event} | queued {queued}, running {len(self.running)}, "
                 f"done {self.done}, failed {self.failed} | {duration(self.clock() - self.started_at)} elapsed, "
                 f"{self.eta()}")

    def start(self, key, what: str) -> None:
        self.running[key] = self.clock()
        self.line(f"started {what}")

    def finish(self, key, what: str, ok: bool) -> None:
        began = self.running.pop(key, None)
        if began is not None:
            self.spent.append(self.clock() - began)
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.line(f"{'done' if ok else 'FAILED'} {what}")

    def note(self, text: str) -> None:
        self.out(text)
