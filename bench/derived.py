"""When a run's derived outputs (evaluate's record, tune's thresholds and studies) are up to date.

Their input identity is what they are computed from: the run's files as they are on disk, the step's params
section, the run's key, and the code closure of the step's module (derived from its imports, as a run's own
identity is). A step whose recorded identity equals the current one, with every output it lists intact (same
SHA-256), is skipped; anything else (no record, other inputs, a damaged or missing output) recomputes it. So a
DVC stage that reruns because one method's training code changed re-derives only the runs that retrained.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from bench.errors import BenchError
from bench.identity import closure_in, hash_file, module_path, sha256_json, source_tree
from bench.io import read_json
from bench.plan import MARKER

STEP_MODULES = {"evaluate": "bench.evaluate.thresholds", "tune": "bench.tune.run"}
NOT_READ = {"checkpoint.pt", MARKER}  # training's resume state, not its result


@lru_cache(maxsize=None)
def step_code(step: str) -> tuple[tuple[str, str], ...]:
    """(file, sha256) of every file in the closure of the step's module (one process computes it once)."""
    start = module_path(STEP_MODULES[step])
    tree = source_tree(start)
    return tuple((tree.key(p), hash_file(p)) for p in closure_in(tree, STEP_MODULES[step], start))


def run_files(run_dir: Path) -> dict[str, str]:
    """sha256 of each file of a run folder a derived step may read (all but the checkpoint and the marker)."""
    return {p.name: hash_file(p) for p in sorted(run_dir.iterdir())
            if p.is_file() and p.name not in NOT_READ and not p.name.startswith(".")} if run_dir.is_dir() else {}


def inputs_identity(step: str, key: dict, run_dir: Path, section: dict) -> str:
    """The digest of everything the step's output of one run is computed from."""
    return sha256_json({"step": step, "run": key, "files": run_files(run_dir), "params": section,
                        "code": dict(step_code(step))})


def stamp(inputs: str, outputs: list[Path]) -> dict:
    """What a derived record keeps to be found up to date later: its inputs and its other outputs' hashes
    (written last, after those outputs, so a record with a stamp means they were all written)."""
    return {"inputs": inputs, "outputs": {p.name: hash_file(p) for p in outputs}}


def up_to_date(record: Path, inputs: str, outputs: list[Path]) -> bool:
    """True when `record` (a JSON object) holds the stamp of these inputs and every listed output is intact."""
    try:
        recorded = read_json(record, "")["stamp"]
        return recorded["inputs"] == inputs and all(
            p.is_file() and recorded["outputs"].get(p.name) == hash_file(p) for p in outputs)
    except (OSError, BenchError, KeyError, TypeError, AttributeError):  # missing, damaged, written before stamps
        return False
