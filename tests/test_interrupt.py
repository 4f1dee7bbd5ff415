"""Ctrl-C during `eebench run` (issue 14 item 3): the runs in progress stop (worker processes too), no RUNNING.json
marker and no half-written run is left, and a rerun completes the grid. A terminal's Ctrl-C sends SIGINT to the
whole foreground process group; so does each test, to a CLI started in a session of its own. The slurm
executor's Ctrl-C (its submitted jobs cancelled) is in test_slurm.py, where a cluster is reachable."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.config import validate
from bench.io import read_json
from bench.paths import run_dir
from bench.plan import MARKER, plan_grid
from bench.study import merge
from tests.conftest import write_params

sys.path.insert(0, str(Path(__file__).parent))
from test_executors import SMALL, prepared_study  # noqa: E402

LONGER = {"prepare": {"tiny": {"n_train": 2048}}, "train": {"tiny": {"epochs": 4}}}  # seconds per run, not less


def cli(folder: Path, *argv: str) -> subprocess.Popen:
    """The CLI as a terminal starts it: SIGINT at its default disposition. A test suite started in the background
    by a non-interactive shell (`make test &`, nohup) inherits SIGINT *ignored*, and Python then keeps ignoring it,
    so Ctrl-C would be tested against a process that cannot receive it."""
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *argv], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def group_gone(pgid: int) -> bool:
    """No live process is left in process group `pgid` (an exited one not yet reaped, a zombie, does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


@pytest.mark.parametrize("executor", ["processes", "local"])
def test_ctrl_c_stops_the_runs_leaves_no_marker_and_a_rerun_completes(tmp_path, real_params, executor):
    raw = merge(merge(copy.deepcopy(real_params), SMALL), LONGER)
    params = validate(copy.deepcopy(raw))
    folder = prepared_study(tmp_path, params)
    write_params(folder, raw)
    folders = [folder / run_dir("tiny", "tiny_cnn", m, 0) for m in params["grid"]["methods"]]
    busy = folders if executor == "processes" else folders[:1]  # two workers train both runs at once

    process = cli(folder, "run", "--executor", executor, "--workers", "2")
    deadline = time.monotonic() + 120
    while not all((f / MARKER).is_file() for f in busy):  # the runs are under way
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.02)
    assert not any((f / "metrics.json").exists() for f in busy), "a run finished before Ctrl-C; make it longer"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, _ = process.communicate(timeout=60)

    assert process.returncode == 130 and out.rstrip().endswith("eebench: interrupted"), out
    assert "Traceback" not in out, out
    deadline = time.monotonic() + 10  # the workers too: nothing of the command's process group is left
    while not group_gone(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_gone(process.pid)
    assert not list(folder.rglob(MARKER)) and not list(folder.rglob(".*.tmp"))
    for f in folders:  # a run is finished (a whole record) or unfinished (no record); never half of one
        assert not (f / "metrics.json").exists() or read_json(f / "metrics.json")["status"] == "ok"
    assert {r.state for r in plan_grid(params, folder) if r.run_dir in busy} == {"missing"}

    rerun = cli(folder, "run", "--executor", executor, "--workers", "2")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert {r.state for r in plan_grid(params, folder)} == {"done"} and not list(folder.rglob(MARKER))


def ctrl_c_inside_a_class_body(*args, **kwargs):
    """What a run meets when Ctrl-C lands while torch lazily imports a module at its first step (seen in a
    fresh-clone CI run): the KeyboardInterrupt is raised in a descriptor's __set_name__, and Python 3.11 wraps it
    in RuntimeError("Error calling __set_name__ ...") with the interrupt as its cause (3.12 no longer wraps it)."""
    class Field:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    type("CompilationCallbackHandler", (), {"start_callbacks": Field()})


class Quiet:
    def start(self, run, text):
        pass

    def finish(self, run, text, ok):
        pass


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_ctrl_c_that_python_wrapped_in_another_exception_stops_the_grid_not_fails_the_run(tmp_path, monkeypatch,
                                                                                          executor):
    import types

    import bench.execute.unit as unit
    from bench.execute import EXECUTORS
    from bench.execute.processes import work

    monkeypatch.setattr(unit, "execute", ctrl_c_inside_a_class_body)
    with pytest.raises(KeyboardInterrupt):
        if executor == "local":
            run = types.SimpleNamespace(dataset="tiny", model="tiny_cnn", method="joint", seed=0, state="missing",
                                        reason="")
            EXECUTORS.get("local")({}).run({}, [run], tmp_path, Quiet(), False)
        else:  # a worker's own function, called in this process: the interrupt goes back instead of "failed"
            previous = signal.getsignal(signal.SIGINT)
            try:
                work({}, "tiny", "tiny_cnn", "joint", 0, str(tmp_path), str(tmp_path / "log.txt"))
            finally:
                signal.signal(signal.SIGINT, previous)


def test_interrupted_by_follows_the_cause_and_the_context():
    from bench.execute.local import interrupted_by

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("during handling")  # __context__
    except ValueError as exc:
        assert interrupted_by(exc)
    assert interrupted_by(RuntimeError("wrapped").with_traceback(None)) is False
    wrapped = RuntimeError("Error calling __set_name__")
    wrapped.__cause__ = KeyboardInterrupt()
    assert interrupted_by(wrapped) and not interrupted_by(None)
