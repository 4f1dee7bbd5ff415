"""Aggregate per-run metrics, threshold evaluations and budget tuning of the current grid into tidy tables."""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.io import read_json, write_csv, write_json
from bench.paths import RESULTS, eval_path, tune_dir


def grid_runs(grid: dict):
    for dataset in grid["datasets"]:
        for method in grid["methods"]:
            for seed in grid["seeds"]:
                yield dataset, method, seed


def required(path):
    if not path.is_file():
        raise BenchError(f"missing {path}; run `dvc repro` so that every grid run is trained, evaluated and tuned")
    return path


def collect(grid: dict) -> dict[str, pd.DataFrame]:
    runs, curves, budgets, pareto = [], [], [], []
    for dataset, method, seed in grid_runs(grid):
        evaluation = read_json(required(eval_path(dataset, method, seed)))
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
        folder = tune_dir(dataset, method, seed)
        tuning = read_json(required(folder / "tuning.json"))
        for row in tuning["budgets"]:
            base = {"dataset": dataset, "method": method, "seed": seed, "policy": tuning["policy"],
                    "budget": row["budget"], "calibrator": row["calibrator"], "feasible": row["feasible"]}
            if row["feasible"]:
                base.update({f"{split}_{key}": row[split][key] for split in ("val", "test")
                             for key in ("accuracy", "flops_fraction", "expected_flops", "early_exit_accuracy")})
                base.update({f"test_exit{k}_fraction": f for k, f in enumerate(row["test"]["exit_fractions"])})
                base["test_cost_minus_budget"] = row["test_cost_minus_budget"]
            budgets.append(base)
        pareto.append(pd.read_csv(required(folder / "pareto.csv")))
    return {"per_exit": pd.DataFrame(runs), "threshold_curves": pd.DataFrame(curves),
            "budgets": pd.DataFrame(budgets), "pareto": pd.concat(pareto, ignore_index=True)}


def aggregate(grid: dict) -> dict:
    tables = collect(grid)
    runs = tables["per_exit"]
    curves = tables["threshold_curves"].drop(columns=["exit_fractions", "accuracy_of_exited"])
    write_csv(RESULTS / "per_exit.csv", runs)
    write_csv(RESULTS / "threshold_curves.csv", curves)
    write_csv(RESULTS / "budgets.csv", tables["budgets"])
    write_csv(RESULTS / "pareto.csv", tables["pareto"])
    deepest = runs[runs["exit"] == runs.groupby(["dataset", "method"])["exit"].transform("max")]
    summary = (runs.groupby(["dataset", "method", "exit"])
               .agg(test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
                    seeds=("seed", "nunique"), cumulative_flops=("cumulative_flops", "first"),
                    seconds_per_epoch=("seconds_per_epoch", "mean"))
               .reset_index())
    write_csv(RESULTS / "summary.csv", summary)
    tuned = tables["budgets"]
    tuned = tuned[(tuned["calibrator"] == "optuna_per_exit") & tuned["feasible"]]
    metrics: dict = {"flops_unit": runs["flops_unit"].iloc[0], "counter": runs["counter"].iloc[0]}
    for (dataset, method), group in deepest.groupby(["dataset", "method"]):
        entry = {"deepest_exit_test_accuracy": float(group["test_accuracy"].mean()),
                 "deepest_exit_flops": int(group["cumulative_flops"].iloc[0]),
                 "seeds": int(group["seed"].nunique())}
        for budget, rows in tuned[(tuned["dataset"] == dataset) & (tuned["method"] == method)].groupby("budget"):
            entry[f"budget_{budget:g}"] = {"test_accuracy": float(rows["test_accuracy"].mean()),
                                           "test_flops_fraction": float(rows["test_flops_fraction"].mean())}
        metrics.setdefault(dataset, {})[method] = entry
    write_json(RESULTS / "metrics.json", metrics)
    return metrics
