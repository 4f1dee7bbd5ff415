"""Atomic file writes: every file appears whole or not at all (write to a temporary file, then rename);
checked reads: a damaged file is a one-line BenchError naming it and the fix, never a traceback."""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from bench.errors import BenchError

# the names atomic_path's temporary files get (mkstemp: "." + target name + "." + 8 random chars + ".tmp");
# .dvcignore holds the same pattern so DVC never hashes one into an output
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
REGENERATE = "re-run the stage that writes it (`dvc repro -f <stage>`, or the `eebench` command of that stage)"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(path: str | os.PathLike, obj: object) -> None:
    # through a file object: given a path, torch.save names the archive's records after it, and the
    # temporary name would make two saves of the same tensors differ byte for byte
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def write_csv(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def remove_stale_temps(*folders: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that writes killed half-way (kill -9, power loss) left in `folders` (and
    their subfolders when `recursive`); a stage calls this on the folders it owns before it writes there.
    Returns what was removed."""
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
            if TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def damaged(path: str | os.PathLike, what: str, fix: str) -> BenchError:
    return BenchError(f"{path} is corrupt (damaged or truncated: {what}); {fix}")


def read_json(path: str | os.PathLike, fix: str = REGENERATE) -> dict:
    """Parse a JSON file; invalid JSON (a truncated or edited file) is a one-line BenchError with `fix`."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise damaged(path, f"not valid JSON: {str(exc).splitlines()[0]}", fix) from None


def load_torch(path: str | os.PathLike, fix: str = REGENERATE, weights_only: bool = True):
    """torch.load; a truncated or damaged archive (torch raises several types) is a one-line BenchError."""
    try:
        return torch.load(path, weights_only=weights_only)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:
        raise damaged(path, f"torch.load failed: {exc.__class__.__name__}", fix) from None


def load_npy(path: str | os.PathLike, fix: str = REGENERATE):
    """np.load of one .npy array (no pickles); a truncated or damaged file is a one-line BenchError."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:
        raise damaged(path, f"np.load failed: {exc.__class__.__name__}", fix) from None


def read_csv(path: str | os.PathLike, fix: str = REGENERATE):
    """pandas.read_csv of a file written by write_csv; a truncated one (every write ends in a newline) or an
    unparsable one is a one-line BenchError."""
    import pandas as pd

    raw = Path(path).read_bytes()
    if not raw.endswith(b"\n"):
        raise damaged(path, "does not end with a newline", fix)
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise damaged(path, f"not valid CSV: {str(exc).splitlines()[0]}", fix) from None
