"""Pipeline overhead: how long `dvc repro` takes when nothing changed, on the grid of a study folder
(default: the project root, i.e. the full default study, after it has been reproduced once).

    python benchmarks/dvc_noop.py [STUDY_DIR] [--repeats 5]

Prints the number of stages, then the median and each time of a no-op `dvc repro` and of `dvc status`,
measured alternately.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study_dir", nargs="?", type=Path, default=ROOT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    stages = timed([dvc, "stage", "list", "--name-only"], args.study_dir)[1].split()
    first, out = timed([dvc, "repro"], args.study_dir)
    if "up to date" not in out:
        sys.exit(f"the pipeline in {args.study_dir} was not up to date (the first `dvc repro` ran stages for "
                 f"{first:.0f} s); run `dvc repro` there first, then benchmark the no-op")
    times: dict[str, list[float]] = {"dvc repro (no-op)": [], "dvc status": []}
    for _ in range(args.repeats):
        times["dvc repro (no-op)"].append(timed([dvc, "repro"], args.study_dir)[0])
        times["dvc status"].append(timed([dvc, "status"], args.study_dir)[0])
    print(f"{args.study_dir}: {len(stages)} stages, {args.repeats} alternating repeats")
    for name, values in times.items():
        print(f"{name:20s} median {statistics.median(values):6.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in values)
              + (" (target ≤ 3 s)" if "repro" in name else ""))


if __name__ == "__main__":
    main()
