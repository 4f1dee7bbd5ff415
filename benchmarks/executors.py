"""Executors side by side: `processes` with 2 one-thread workers vs `local` with 2 threads (wall time of the same
grid, each in a fresh folder, interleaved over repeats), and the SLURM + submitit overhead per run (submit ->
the job's function starts; the job's function returns -> eebench sees the result). Needs a cluster for the
second part (`make cluster`); without one it says so.

    python benchmarks/executors.py [--grid smoke|ci] [--methods joint,branchynet,sdn,hard_cgt] [--epochs 3]
                                   [--repeats 1] [--slurm-runs 2]

`--grid smoke` (default): the smoke profile's recipe (tiny dataset, 3 epochs) on 4 methods instead of all of them
(the full smoke grid takes ~10 minutes per executor on 2 shared cores). `--grid ci`: the ci profile's grid as
`make regress` trains it (Fashion-MNIST subset and Indian Pines, its methods, seeds and epochs; `--methods` and
`--epochs` are ignored), its datasets prepared once and copied into each folder (preparing is not timed)."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.config import validate  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.execute import executor_settings, run_all, with_threads  # noqa: E402
from bench.plan import plan_grid  # noqa: E402
from bench.study import merge  # noqa: E402


def params_for(methods: list[str], epochs: int, threads: int, grid: str = "smoke") -> dict:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles" / f"{grid}.yaml").read_text())
    if grid == "smoke":
        over = {"grid": {"methods": methods, "datasets": ["tiny"], "seeds": [0], "extra_seed_methods": []},
                "train": {"tiny": {"epochs": epochs}, "common": {"threads": threads}},
                "analyse": {"reference": methods[0]}}
    else:  # the profile's own grid and recipes
        over = {"train": {"common": {"threads": threads}}}
    cwd = os.getcwd()
    os.chdir(ROOT)  # params.yaml names files relative to the project
    try:
        return validate(merge(merge(base, profile), over))
    finally:
        os.chdir(cwd)


def prepare(params: dict, folder: Path) -> None:
    """The grid's datasets in `folder`, each prepared once beside it (in `prepared/`) and copied in."""
    from bench.data import prepare_dataset

    cache = folder.parent / "prepared" / "datasets"
    for dataset in params["grid"]["datasets"]:
        if not (cache / dataset).is_dir():
            prepare_dataset(dataset, params["prepare"][dataset], cache)
        shutil.copytree(cache / dataset, folder / "datasets" / dataset)


def timed(params: dict, folder: Path, name: str, **settings) -> tuple[float, list]:
    prepare(params, folder)
    chosen = {**executor_settings(params, name), **settings}
    runs = plan_grid(with_threads(params, chosen), folder)
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    outcomes = run_all(with_threads(params, chosen), runs, folder, chosen, out=lambda s: lines.append((time.time(), s)))
    wall = time.perf_counter() - started
    if not all(o.ok for o in outcomes):
        raise SystemExit(f"{name}: a run failed: {[o.reason for o in outcomes if not o.ok]}")
    return wall, lines, outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="smoke", choices=["smoke", "ci"])
    ap.add_argument("--methods", default="joint,branchynet,sdn,hard_cgt")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--slurm-runs", type=int, default=2)
    args = ap.parse_args()
    methods = args.methods.split(",")
    grid = params_for(methods, args.epochs, 2, args.grid)["grid"]
    shape = (f"tiny x {len(methods)} methods ({', '.join(methods)}) x 1 seed, {args.epochs} epochs"
             if args.grid == "smoke" else
             f"the ci profile: {' + '.join(grid['datasets'])} x {len(grid['methods'])} methods "
             f"({', '.join(grid['methods'])}) x {len(grid['seeds'])} seeds, its epochs")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f} at start; grid: {shape}, {args.repeats} repeat(s)")
    walls = {"local, 2 threads": [], "processes, 2 workers x 1 thread": []}
    with tempfile.TemporaryDirectory(prefix="eebench-exec-") as tmp:
        for repeat in range(args.repeats):
            for label in (list(walls) if repeat % 2 == 0 else list(walls)[::-1]):
                folder = Path(tmp) / f"{repeat}-{label.split(',')[0]}"
                if label.startswith("local"):
                    wall = timed(params_for(methods, args.epochs, 2, args.grid), folder, "local")[0]
                else:
                    wall = timed(params_for(methods, args.epochs, 2, args.grid), folder, "processes", workers=2,
                                 threads_per_worker=1)[0]
                walls[label].append(wall)
                shutil.rmtree(folder)
        for label, values in walls.items():
            print(f"{label:34s} median {statistics.median(values):7.1f} s   runs: "
                  + ", ".join(f"{v:.1f}" for v in values))
        ratio = statistics.median(walls["local, 2 threads"]) / statistics.median(walls["processes, 2 workers x 1 thread"])
        print(f"processes (2 x 1 thread) vs local (2 threads): {ratio:.2f}x the throughput (wall-time ratio local/processes)")

        params = params_for(methods[:args.slurm_runs], 1, 1)
        folder = Path(tmp) / "slurm"
        submitted = time.time()
        try:
            _, lines, outcomes = timed(params, folder, "slurm")
        except BenchError as exc:
            print(f"SLURM overhead: not measured ({exc})")
            return
        to_start, to_visible = [], []
        for outcome in outcomes:
            dataset, model, method, seed = outcome.key
            label = f"{method}/{dataset}/{model}/s{seed}"
            seen = next(t for t, s in lines if f"done {label}" in s)
            to_start.append(outcome.metrics["started"] - submitted)
            to_visible.append(seen - outcome.metrics["finished"])
        print(f"SLURM + submitit, {len(outcomes)} one-epoch runs as one job array on the local cluster "
              f"({os.environ.get('SLURM_CONF', 'default slurm.conf')}):")
        print("  submit -> job function starts (sbatch, scheduling, python + torch import, unpickling): "
              + ", ".join(f"{v:.1f} s" for v in to_start))
        print("  job function returns -> result seen by eebench (job exit, squeue poll every 1 s):    "
              + ", ".join(f"{v:.1f} s" for v in to_visible))


if __name__ == "__main__":
    main()
