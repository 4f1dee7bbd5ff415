"""Pipeline overhead: how long `dvc repro` takes when nothing changed, on the grid of a study folder
(default: the project root, i.e. the full default study, after it has been reproduced once).

    python benchmarks/dvc_noop.py [STUDY_DIR ...] [--repeats 5]

Prints, per folder, the number of stages, then the median and each time of a no-op `dvc repro` and of
`dvc status`, measured alternately; with several folders (e.g. copies of one study recorded under different
`dvc.yaml`s), every repeat visits each folder in turn, and the ratio of each median to the first folder's is
printed: absolute times drift by 20 % within minutes on a shared machine, the side-by-side ratio much less.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def noop_times(dvc: str, study_dir: Path, times: dict[str, list[float]]) -> None:
    times.setdefault("dvc repro (no-op)", []).append(timed([dvc, "repro"], study_dir)[0])
    times.setdefault("dvc status", []).append(timed([dvc, "status"], study_dir)[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study_dirs", nargs="*", type=Path, default=[ROOT])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    stages = {}
    for folder in args.study_dirs:
        stages[folder] = timed([dvc, "stage", "list", "--name-only"], folder)[1].split()
        first, out = timed([dvc, "repro"], folder)
        if "up to date" not in out:
            sys.exit(f"the pipeline in {folder} was not up to date (the first `dvc repro` ran stages for "
                     f"{first:.0f} s); run `dvc repro` there first, then benchmark the no-op")
    times: dict[Path, dict[str, list[float]]] = {folder: {} for folder in args.study_dirs}
    for _ in range(args.repeats):
        for folder in args.study_dirs:
            noop_times(dvc, folder, times[folder])
    reference = statistics.median(times[args.study_dirs[0]]["dvc repro (no-op)"])
    for folder in args.study_dirs:
        print(f"{folder}: {len(stages[folder])} stages, {args.repeats} alternating repeats")
        for name, values in times[folder].items():
            median = statistics.median(values)
            ratio = f" ({median / reference:.2f}x the first folder's)" if "repro" in name and len(args.study_dirs) > 1 else ""
            print(f"  {name:20s} median {median:6.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in values)
                  + (" (target ≤ 3 s)" if "repro" in name else "") + ratio)


if __name__ == "__main__":
    main()
