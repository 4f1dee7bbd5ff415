"""Which code produced a result: the git commit, a SHA-256 of any uncommitted changes, and the check that
`make repro` runs so that a study is not produced from uncommitted code by accident.

Both cover only the code and configuration that shape results (RESULT_SHAPING): a tree whose only change is
elsewhere (the `dvc.lock` that `dvc repro` rewrites after every stage, docs, figures) records the bare commit. The
diff's hash covers `git diff HEAD --binary` of those paths (every tracked file's change, staged or not) and the path
and content of every untracked file there that git does not ignore, so two dirty trees with the same hash hold the
same result-shaping code.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from bench.errors import BenchError

# The code and configuration that shape results; `make repro` refuses while any of them has uncommitted changes.
RESULT_SHAPING = ("bench", "methods", "dvc.yaml", "params.yaml", "pyproject.toml")


def git(args: list[str], cwd: Path | str | None = None) -> bytes | None:
    """stdout of `git <args>`, or None when git is missing or this is not a repository."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def repo_root(cwd: Path | str | None = None) -> Path | None:
    out = git(["rev-parse", "--show-toplevel"], cwd)
    return Path(out.decode().strip()) if out else None


def changed_files(root: Path, paths: tuple[str, ...] = ()) -> list[str]:
    """Tracked files that differ from HEAD and untracked files git does not ignore (under `paths` if given)."""
    spec = ["--", *paths] if paths else []
    tracked = git(["diff", "HEAD", "--name-only", "--no-renames", *spec], root) or b""
    untracked = git(["ls-files", "--others", "--exclude-standard", *spec], root) or b""
    return sorted({line for line in (tracked + b"\n" + untracked).decode().splitlines() if line})


def diff_sha256(root: Path, paths: tuple[str, ...] = RESULT_SHAPING) -> str | None:
    """SHA-256 of the uncommitted changes under `paths` (tracked diff plus untracked files' names and content);
    None if those paths are clean."""
    if not changed_files(root, paths):
        return None
    digest = hashlib.sha256()
    spec = ["--", *paths]
    digest.update(git(["diff", "HEAD", "--binary", "--no-renames", "--no-color", "--no-ext-diff", *spec], root) or b"")
    untracked = (git(["ls-files", "--others", "--exclude-standard", "-z", *spec], root) or b"").split(b"\0")
    for name in sorted(n for n in untracked if n):
        digest.update(b"\0untracked\0" + name + b"\0")
        path = root / name.decode()
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        else:  # a symlink (or something else): its target names what it holds
            digest.update(str(path.readlink() if path.is_symlink() else "").encode())
    return digest.hexdigest()


def git_state(cwd: Path | str | None = None) -> dict:
    """{"git_commit": sha[-dirty] or "unknown", "git_diff_sha256": hex when result-shaping code is dirty, else None}."""
    root = repo_root(cwd)
    sha = (git(["rev-parse", "HEAD"], root) or b"").decode().strip() if root else ""
    if not sha:
        return {"git_commit": "unknown", "git_diff_sha256": None}
    diff = diff_sha256(root)
    return {"git_commit": sha + ("-dirty" if diff else ""), "git_diff_sha256": diff}


def check_clean(cwd: Path | str | None = None, allow_dirty: bool = False, paths: tuple[str, ...] = RESULT_SHAPING) -> str:
    """Refuse (BenchError) when the code that shapes results has uncommitted changes, unless `allow_dirty`.

    Returns the one line to print: clean, or dirty-but-allowed with the diff's hash that every run records.
    """
    root = repo_root(cwd)
    if root is None:
        return "not a git repository: results will record commit 'unknown'"
    changed = changed_files(root, paths)
    if not changed:
        return "code that shapes results is committed"
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    if not allow_dirty:
        raise BenchError(f"uncommitted changes in code that shapes results ({shown}); commit them, or run "
                         f"`make repro ALLOW_DIRTY=1` to go ahead and record the diff's hash with every run")
    return f"warning: running with uncommitted changes ({shown}); runs record git_diff_sha256 {diff_sha256(root)}"
