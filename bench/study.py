"""Study folders: the real dvc.yaml with params.yaml merged with a profile (e.g. profiles/smoke.yaml),
run by the real `dvc repro` in a folder of its own, so a small study never touches the default one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.config import read_yaml, validate
from bench.errors import BenchError
from bench.io import write_text

CODE_DIRS = ("bench", "methods", "claims")  # copied so that DVC hashes the code (and claims data) the stages depend on


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def profile_params(project: Path, profile: str | Path) -> dict:
    path = Path(profile) if Path(profile).suffix else project / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (project / "profiles").glob("*.yaml"))
        raise BenchError(f"profile {path} not found; available profiles: {', '.join(choices)}")
    base, override = read_yaml(project / "params.yaml"), read_yaml(path) or {}
    if not isinstance(base, dict) or not isinstance(override, dict):
        raise BenchError(f"{path if isinstance(base, dict) else project / 'params.yaml'} must be a YAML mapping of "
                         "params.yaml sections")
    params = merge(base, override)
    validate(params)
    for name in params["grid"]["methods"]:  # DVC tracks methods.<name> per stage: a method on its defaults gets {}
        params["methods"].setdefault(name, {})
    return params


def dvc_env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_DAEMON="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def dvc(folder: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=folder, env=dvc_env(), text=True,
                            capture_output=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise BenchError(f"`dvc {' '.join(args)}` failed in {folder}:\n" + "\n".join(tail))
    return result


def build_study(project: Path, folder: Path, params: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):  # .dvcignore keeps interrupted writes' temp files out of outputs
        shutil.copy2(project / name, folder / name)
    write_text(folder / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    for name in CODE_DIRS:
        target = folder / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(project / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        copy_function=shutil.copy)  # copy without metadata: DVC hashes content anyway
    if not (folder / ".dvc").is_dir():
        dvc(folder, "init", "--no-scm", "-q")
        dvc(folder, "config", "core.analytics", "false")


def run_study(project: Path, folder: Path, profile: str, executor: str | None = None, workers: int | None = None,
              out=print) -> None:
    """Build (or refresh) the study folder and run `dvc repro` there, DVC's output streamed line by line through
    `out` with stage progress. With `executor`, first train every run the study needs through it (all of the
    grid at once: `eebench run` in the folder); `dvc repro` then records those runs without retraining them."""
    build_study(project, folder, profile_params(project, profile))
    if executor is not None or workers is not None:
        dvc_stream(folder, "repro", "prepare", out=out)  # the planner needs the prepared datasets
        command = ["eebench", "run"] + (["--executor", executor] if executor else []) \
            + (["--workers", str(workers)] if workers else [])
        out(f"== training the grid: {' '.join(command)}")
        if stream(command, folder, out) != 0:
            raise BenchError(f"training the grid through the {executor or 'configured'} executor failed in {folder} "
                             "(see the lines above); fix the cause and rerun: done runs are kept")
    dvc_stream(folder, "repro", out=out)


STAGE_EVENT = re.compile(r"^(?:Running stage|Stage) '([^']+)'(:| didn't change, skipping)")


def stream(command: list[str], folder: Path, out) -> int:
    """Run `command` in `folder`, passing its output (stdout and stderr) on as it comes, one whole line at a time
    (carriage-return progress bars become lines); return its exit status."""
    env = dict(dvc_env(), PYTHONUNBUFFERED="1")
    with subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    out(part)
        return proc.wait()


def dvc_stream(folder: Path, *args: str, out=print) -> None:
    """`dvc <args>` with its output streamed, and before each stage a line with the stage, stages done/total,
    the elapsed time and an ETA (mean time of the stages run so far times the stages left: an upper bound, as
    unchanged stages are skipped in no time). A failure is a BenchError with DVC's last lines."""
    from bench.execute.progress import duration

    stages = dvc(folder, "stage", "list", "--name-only").stdout.split()
    targets = [a for a in args[1:] if not a.startswith("-")]
    total = len([s for s in stages if not targets or any(s == t or s.startswith(t + "@") for t in targets)])
    started, state = time.monotonic(), {"seen": 0, "ran": [], "current": None}
    tail: list[str] = []

    def line(text: str) -> None:
        tail[:] = [*tail[-14:], text]
        event = STAGE_EVENT.match(text)
        if event:
            now = time.monotonic()
            if state["current"] is not None:
                state["ran"].append(now - state["current"])
            state["current"] = now if event.group(2) == ":" else None
            state["seen"] += 1
            if event.group(2) == ":":
                mean = sum(state["ran"]) / len(state["ran"]) if state["ran"] else None
                eta = f"ETA <= {duration(mean * (total - state['seen'] + 1))}" if mean is not None else "ETA unknown yet"
                out(f"== stage {state['seen']}/{total}: {event.group(1)} | {state['seen'] - 1} done, "
                    f"{duration(now - started)} elapsed, {eta}")
                return
        out(text)

    if stream([sys.executable, "-m", "dvc", *args], folder, line) != 0:
        raise BenchError(f"`dvc {' '.join(args)}` failed in {folder}:\n" + "\n".join(tail))
    out(f"== dvc {' '.join(args)}: {total} stage(s), {len(state['ran']) + (state['current'] is not None)} run, "
        f"in {duration(time.monotonic() - started)}")
