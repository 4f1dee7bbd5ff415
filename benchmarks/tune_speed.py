"""Tuning speed: 200 Optuna trials for one (run, budget) and the exact single-threshold sweep, on cached
logits of a real run (or synthetic logits of the same shape), measured side by side in one process.

    python benchmarks/tune_speed.py [results/runs/fashion_mnist/branchynet/fmnist_cnn/seed0]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

from bench.evaluate.policies import POLICIES
from bench.tune.cached import CachedSplit
from bench.tune.exact import best_single_threshold, finite_threshold, single_threshold_curve
from bench.tune.run import load_splits, persist_studies
from bench.tune.search import tune_thresholds

TRIALS, BUDGET, REPEATS = 200, 0.5, 3


def synthetic() -> CachedSplit:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (6000,), generator=gen)
    logits = torch.randn(3, 6000, 10, generator=gen)
    logits[:, torch.arange(6000), labels] += torch.tensor([1.0, 2.0, 3.0]).view(3, 1)
    return CachedSplit.from_logits(POLICIES.get("max_softmax"), logits, labels, {}, [2259200, 10665472, 17893376])


def main() -> None:
    torch.set_num_threads(2)
    if len(sys.argv) > 1:
        val, _, metrics = load_splits(Path(sys.argv[1]), "method")
        policy, source = POLICIES.get(metrics["tuned_policy"]), sys.argv[1]
    else:
        val, policy, source = synthetic(), POLICIES.get("max_softmax"), "synthetic 3 exits × 6000 samples"
    print(f"machine: {platform.processor() or platform.machine()}, torch threads 2, optuna {optuna.__version__}")
    print(f"logits: {source}; policy {policy.name}; budget {BUDGET}")
    exact, search, persist = [], [], {"sqlite": [], "journal": []}
    for _ in range(REPEATS):  # interleaved so that machine drift hits every measurement alike
        started = time.perf_counter()
        curve = single_threshold_curve(val)
        exact.append(time.perf_counter() - started)
        single = finite_threshold(curve["threshold"][best_single_threshold(curve, BUDGET)], policy.high)
        started = time.perf_counter()
        _, study = tune_thresholds(val, policy, BUDGET, TRIALS, seed=0, warm_start=[single] * (val.num_exits - 1))
        search.append(time.perf_counter() - started)
        for storage in persist:
            folder = Path(f"/tmp/eebench-bench-{storage}")
            folder.mkdir(exist_ok=True)
            started = time.perf_counter()
            persist_studies([study], folder, storage)
            persist[storage].append(time.perf_counter() - started)
    median = statistics.median
    print(f"exact single-threshold sweep ({len(curve['threshold'])} operating points): {median(exact) * 1e3:.1f} ms")
    print(f"Optuna TPE, {TRIALS} trials, in memory: {median(search):.2f} s (target ≤ 2 s)")
    print(f"  ratio Optuna / exact sweep: {median(search) / median(exact):.0f}×")
    for storage, times in persist.items():
        print(f"persisting the study ({storage}): {median(times):.2f} s")


if __name__ == "__main__":
    main()
