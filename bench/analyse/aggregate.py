"""Aggregate per-run metrics and threshold evaluations of the current grid into tidy tables."""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.io import read_json, write_csv, write_json
from bench.paths import RESULTS, eval_path


def collect(grid: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, curves = [], []
    for dataset in grid["datasets"]:
        for method in grid["methods"]:
            for seed in grid["seeds"]:
                eval_file = eval_path(dataset, method, seed)
                if not eval_file.is_file():
                    raise BenchError(f"missing {eval_file}; run `dvc repro` so that every grid run is trained and evaluated")
                evaluation = read_json(eval_file)
                metrics = evaluation["run"]
                costs = metrics["exit_costs"]
                for k in range(metrics["num_exits"]):
                    runs.append({"dataset": dataset, "method": method, "seed": seed, "exit": k,
                                 "test_accuracy": metrics["per_exit"]["test"]["accuracy"][k],
                                 "val_accuracy": metrics["per_exit"]["val"]["accuracy"][k],
                                 "cumulative_flops": costs["flops"][k], "cumulative_macs": costs["macs"][k],
                                 "flops_unit": costs["unit"], "counter": costs["counter"],
                                 "seconds_per_epoch": metrics["time"]["seconds_per_epoch"]})
                curves.extend(evaluation["rows"])
    return pd.DataFrame(runs), pd.DataFrame(curves)


def aggregate(grid: dict) -> dict:
    runs, curves = collect(grid)
    curves = curves.drop(columns=["exit_fractions", "accuracy_of_exited"])
    write_csv(RESULTS / "per_exit.csv", runs)
    write_csv(RESULTS / "threshold_curves.csv", curves)
    deepest = runs[runs["exit"] == runs.groupby(["dataset", "method"])["exit"].transform("max")]
    summary = (runs.groupby(["dataset", "method", "exit"])
               .agg(test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
                    seeds=("seed", "nunique"), cumulative_flops=("cumulative_flops", "first"),
                    seconds_per_epoch=("seconds_per_epoch", "mean"))
               .reset_index())
    write_csv(RESULTS / "summary.csv", summary)
    metrics: dict = {"flops_unit": runs["flops_unit"].iloc[0], "counter": runs["counter"].iloc[0]}
    for (dataset, method), group in deepest.groupby(["dataset", "method"]):
        metrics.setdefault(dataset, {})[method] = {
            "deepest_exit_test_accuracy": float(group["test_accuracy"].mean()),
            "deepest_exit_flops": int(group["cumulative_flops"].iloc[0]),
            "seeds": int(group["seed"].nunique()),
        }
    write_json(RESULTS / "metrics.json", metrics)
    return metrics
