"""What to tell a user about a stage's file: the command that (re)generates a damaged or missing artefact (the `fix`
every reader passes to bench/io.py's checked readers), and the one line for an OSError (a full disk, a read-only
folder, a file where a folder belongs) naming the file and the fix. Paths follow bench/paths.py's layout."""

from __future__ import annotations

import errno
from pathlib import Path

from bench.errors import BenchError
from bench.io import REGENERATE, TEMP_NAME, atomic_path

FIGURES_OUTPUTS = {"REPORT.md", "claims.csv"}  # written by `eebench figures`; every other results/<file> by aggregate
STUDY_ELSEWHERE = "or move the study elsewhere: `eebench study --profile <p> --dir <folder>`"


def regenerate(path: str | Path) -> str:
    """The fix for a damaged or missing stage file: which command rewrites it."""
    parts = Path(path).parts
    if "results" in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index("results") + 1:]
        kind = rest[0] if rest else ""
        if kind == "runs" and len(rest) >= 5:  # runs/<dataset>/<method>/<model>/seed<N>/<file>
            dataset, method, model, seed = rest[1], rest[2], rest[3], rest[4].removeprefix("seed")
            folder = Path(*parts[:len(parts) - len(rest) + 5])
            return (f"retrain the run: delete {folder / 'metrics.json'}, then `eebench train --dataset {dataset} "
                    f"--model {model} --method {method} --seed {seed}` (it resumes from its checkpoint when that is "
                    f"intact)")
        if kind in ("eval", "tune", "studies") and len(rest) >= 5:  # <kind>/<dataset>/<method>/<model>/seed<N>…
            stage = "evaluate" if kind == "eval" else "tune"
            dataset, method, model, seed = rest[1], rest[2], rest[3], rest[4].removesuffix(".json").removeprefix("seed")
            return (f"rerun `eebench {stage} --dataset {dataset} --model {model} --method {method} --seed {seed}` "
                    f"(or `dvc repro -f runs@{dataset}-{method}`)")
        if len(rest) == 1:
            stage = "figures" if kind in FIGURES_OUTPUTS else "aggregate"
            return f"rerun `eebench {stage}` (or `dvc repro -f {stage}`)"
    if "datasets" in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index("datasets") + 1:]
        if len(rest) >= 2:
            from bench.data.base import prepare_fix

            return prepare_fix(rest[0])
    return REGENERATE


def read_table(path: str | Path, may_be_empty: bool = False):
    """A CSV table a stage wrote (pandas DataFrame), through bench/io.py's checked reader: a missing or damaged one
    is a one-line BenchError naming the command that rewrites it. `may_be_empty`: a table written without rows or
    columns (one newline) reads as an empty DataFrame."""
    import pandas as pd

    from bench.io import read_csv

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path} is missing; {regenerate(path)}")
    if may_be_empty and path.read_bytes() == b"\n":
        return pd.DataFrame()
    return read_csv(path, regenerate(path))


def written_path(exc: OSError) -> Path | None:
    """The file a write was producing when `exc` was raised, or None, found in the traceback (a failed write()
    names no file, and a failed rename names the temporary one): the target of bench/io.py's writers, or the
    target of an atomic_path temporary file (`.name.XXXXXXXX.tmp` -> `name`) that a frame was writing."""
    from bench import io

    writers = {f.__code__ for f in (io.write_json, io.write_text, io.save_torch, io.write_csv)}
    writers.add(atomic_path.__wrapped__.__code__)
    tb, found = exc.__traceback__, None
    while tb is not None:  # outermost first: the innermost writer wins
        local = tb.tb_frame.f_locals
        if tb.tb_frame.f_code in writers and isinstance(local.get("path"), (str, Path)):
            found = Path(local["path"])
        elif isinstance(local.get("tmp"), (str, Path)) and TEMP_NAME.match(Path(local["tmp"]).name):
            found = target_of(Path(local["tmp"]))
        tb = tb.tb_next
    return found


def target_of(temp: Path) -> Path:
    """The file an atomic_path temporary file stands for: `.name.XXXXXXXX.tmp` -> `name`."""
    return temp.with_name(temp.name[1:].rsplit(".", 2)[0])


def named_file(exc: OSError) -> Path | None:
    """The file `exc` is about: the atomic write's target, else the error's own filename (a temporary file of an
    atomic write stands for its target: `.name.XXXXXXXX.tmp` -> `name`)."""
    target = written_path(exc)
    if target is not None:
        return target
    if exc.filename is None:
        return None
    path = Path(exc.filename)
    return target_of(path) if TEMP_NAME.match(path.name) else path


def os_error(exc: OSError) -> BenchError:
    """One line for an OSError a command raised: what could not be written (or read), why, and the fix. Writes go
    through atomic renames, so whatever the error interrupted left the old file or nothing, never half a file."""
    path = named_file(exc)
    why = exc.strerror or type(exc).__name__
    writing = written_path(exc) is not None
    where = str(path) if path is not None else "a file"
    kept = "files already written are whole and kept, nothing was left half-written"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BenchError(f"cannot write {where}: {why}; free space on that disk ({STUDY_ELSEWHERE}) and rerun; {kept}")
    if exc.errno == errno.EROFS or (writing and exc.errno in (errno.EACCES, errno.EPERM)):
        folder = path.parent if path is not None else "the output folder"
        return BenchError(f"cannot write {where}: {why}; make {folder} writable ({STUDY_ELSEWHERE}) and rerun; {kept}")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        blocking = f": {exc.filename}" if exc.filename is not None and str(exc.filename) != where else ""
        return BenchError(f"cannot create {where}: {why}{blocking} (a file stands where a folder belongs, or a folder "
                          "where a file belongs); move it out of the way and rerun")
    if exc.errno == errno.ENOENT and not writing and path is not None and regenerate(where) != REGENERATE:
        return BenchError(f"{where} is missing; {regenerate(where)}")  # a stage's file: the stage that writes it
    verb = "write" if writing else "access"
    return BenchError(f"cannot {verb} {where}: {why}; check the path and its permissions, then rerun")


__all__ = ["regenerate", "read_table", "os_error", "named_file"]
