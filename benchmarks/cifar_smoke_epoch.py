"""CPU time per epoch of the cifar smoke set-up (profiles/cifar_smoke.yaml: CIFAR-10 with resnet56_sdn and
CIFAR-100 with resnet18_scan, both at reduced width, synthetic tarballs in the canonical format, one epoch), read
from the runs that `make cifar-smoke` trained (their `results/runs.csv`, written by the aggregate stage from each
run's metrics.json): nothing is re-measured here, so the numbers are the pipeline's own.

Per run: training images, the recorded seconds per epoch (training steps, the validation pass and the checkpoint),
images per second, and, for scale only, that rate applied to a full CIFAR training split (45 000 images after the
5 000 validation images) at the same reduced width.

    make cifar-smoke && python benchmarks/cifar_smoke_epoch.py [.cifar-smoke]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from bench.artefacts import read_table
from bench.errors import BenchError

FULL_TRAIN = 45_000  # CIFAR's 50 000 training images less eebench's default 5 000 validation images


def rows(study: Path) -> list[dict]:
    path = study / "results" / "runs.csv"
    if not path.is_file():
        raise BenchError(f"{path} not found; run `make cifar-smoke` first (or pass the study folder it wrote)")
    table = read_table(path)
    return table[table["dataset"].str.startswith("cifar")].to_dict("records")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", nargs="?", default=".cifar-smoke", type=Path,
                        help="the folder `eebench study --profile cifar_smoke --dir` wrote (default .cifar-smoke)")
    args = parser.parse_args()
    try:
        runs = rows(args.study)
    except BenchError as error:
        sys.exit(f"error: {error}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}; study {args.study} (profiles/cifar_smoke.yaml)")
    print(f"{'dataset':9s} {'model':14s} {'method':7s} {'device':6s} {'threads':>7s} {'images':>6s} {'s/epoch':>8s} "
          f"{'images/s':>9s} {'45k-image epoch at this rate':>29s}")
    for run in runs:
        rate = run["train_size"] / run["seconds_per_epoch"]
        print(f"{run['dataset']:9s} {run['model']:14s} {run['method']:7s} {run['device']:6s} "
              f"{run['threads']:>7} {run['train_size']:>6} {run['seconds_per_epoch']:8.2f} {rate:9.1f} "
              f"{FULL_TRAIN / rate / 60:25.1f} min")


if __name__ == "__main__":
    main()
