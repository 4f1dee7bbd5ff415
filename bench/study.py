"""Study folders: the real dvc.yaml with params.yaml merged with a profile (e.g. profiles/smoke.yaml),
run by the real `dvc repro` in a folder of its own, so a small study never touches the default one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.config import validate
from bench.errors import BenchError
from bench.io import write_text

CODE_DIRS = ("bench", "methods")  # copied so that DVC hashes the code the stages depend on


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
    base = yaml.safe_load((project / "params.yaml").read_text())
    params = merge(base, yaml.safe_load(path.read_text()) or {})
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


def run_study(project: Path, folder: Path, profile: str) -> str:
    """Build (or refresh) the study folder and run `dvc repro` there; return DVC's output."""
    build_study(project, folder, profile_params(project, profile))
    return dvc(folder, "repro").stdout
