"""Aggregate every run of the current grid into tidy tables: per run (per_exit, budgets, grad_stats,
calibration, threshold_curves, pareto) and across seeds (summary_exits, summary_budgets, significance)
with 95 % t-intervals and paired tests against the reference method. A run is (dataset, model, method, seed):
every table has a `model` column after `dataset`, and everything compared or averaged is per dataset × model."""

from __future__ import annotations

import pandas as pd

from bench.analyse.headline import headline
from bench.analyse.stats import holm, paired_test, t_interval
from bench.analyse.tables import SETTING, model_after_dataset, with_model
from bench.artefacts import regenerate
from bench.config import runs_of
from bench.errors import BenchError
from bench.io import read_csv, read_json, write_csv, write_json
from bench.paths import RESULTS, eval_path, tune_dir

BUDGET_METRICS = ("test_accuracy", "test_flops_fraction", "test_expected_flops", "test_early_exit_accuracy")


def required(path):
    if not path.is_file():
        raise BenchError(f"missing {path}; run `dvc repro` so that every grid run is trained, evaluated and tuned")
    return path


def read_record(path) -> dict:
    """A stage's JSON record (eval JSON, tuning.json); a damaged one names the command that rewrites it."""
    record = read_json(required(path), regenerate(path))
    if not isinstance(record, dict):
        raise BenchError(f"{path} is not a stage record (a JSON object); {regenerate(path)}")
    return record


CSV_PER_RUN = ("pareto", "operating_points")  # written by each tune stage, concatenated as they are


def collect(params: dict) -> dict[str, pd.DataFrame]:
    tables: dict[str, list] = {name: [] for name in ("per_exit", "threshold_curves", "budgets", "pareto",
                                                     "operating_points", "grad_stats", "calibration", "runs",
                                                     "failed_runs")}
    for dataset, model, method, seed in runs_of(params):  # the full grid plus the extra seeds of some methods
        key = {"dataset": dataset, "model": model, "method": method, "seed": seed}
        evaluation = read_record(eval_path(dataset, model, method, seed))
        if evaluation.get("status") == "failed":  # reported, never averaged in
            tables["failed_runs"].append({**key, "reason": evaluation["reason"]})
            continue
        metrics = evaluation["run"]
        costs = metrics["exit_costs"]
        tables["runs"].append({**key, "seconds_per_epoch": metrics["time"]["seconds_per_epoch"],
                               "epochs": metrics["time"]["epochs"], "torch": metrics["environment"]["packages"]["torch"],
                               "threads": metrics["environment"]["torch_threads"], "device": metrics["environment"]["device"],
                               "git_commit": metrics["environment"]["git_commit"], "exit_policy": metrics["method"]["exit_policy"],
                               **{f"{s}_size": n for s, n in metrics["data"]["sizes"].items()}})
        for k in range(metrics["num_exits"]):
            calibration = evaluation["calibration"][k]
            tables["per_exit"].append({**key, "exit": k, "test_accuracy": metrics["per_exit"]["test"]["accuracy"][k],
                                       "val_accuracy": metrics["per_exit"]["val"]["accuracy"][k],
                                       "test_ece": calibration["ece"], "cumulative_flops": costs["flops"][k],
                                       "cumulative_macs": costs["macs"][k], "flops_unit": costs["unit"],
                                       "counter": costs["counter"]})
            for b in range(calibration["bins"]):
                tables["calibration"].append({**key, "exit": k, "bin": b, "count": calibration["count"][b],
                                              "confidence": calibration["confidence"][b],
                                              "accuracy": calibration["accuracy"][b]})
        tables["threshold_curves"].extend({**row, **key} for row in evaluation["rows"])
        tables["grad_stats"].extend({**key, **row} for row in evaluation["grad_stats"])
        folder = tune_dir(dataset, model, method, seed)
        tuning = read_record(folder / "tuning.json")
        for row in tuning["budgets"]:
            base = {**key, "policy": tuning["policy"], "budget": row["budget"], "calibrator": row["calibrator"],
                    "feasible": row["feasible"], "reached": row["reached"], "reachable_cost": row["reachable_cost"]}
            if row["feasible"]:
                base.update({f"{split}_{name}": row[split][name] for split in ("val", "test")
                             for name in ("accuracy", "flops_fraction", "expected_flops", "early_exit_accuracy",
                                          "early_exit_fraction", "ece")})
                base.update({f"test_exit{k}_fraction": f for k, f in enumerate(row["test"]["exit_fractions"])})
                base.update({f"test_exit{k}_accuracy": a for k, a in enumerate(row["test"]["accuracy_of_exited"])})
                base["test_cost_minus_budget"] = row["test_cost_minus_budget"]
            tables["budgets"].append(base)
        for name in CSV_PER_RUN:
            path = required(folder / f"{name}.csv")
            tables[name].append(read_csv(path, regenerate(path)).assign(**key))
    frames = {name: pd.DataFrame(rows) for name, rows in tables.items() if name not in CSV_PER_RUN}
    frames["failed_runs"] = pd.DataFrame(tables["failed_runs"], columns=["dataset", "model", "method", "seed", "reason"])
    if frames["per_exit"].empty:
        raise BenchError("every run of the grid failed; see results/runs/*/*/*/*/metrics.json for the reasons")
    frames.update({name: pd.concat(tables[name], ignore_index=True) for name in CSV_PER_RUN})
    frames["threshold_curves"] = frames["threshold_curves"].drop(columns=["exit_fractions", "accuracy_of_exited"])
    return {name: model_after_dataset(frame) for name, frame in frames.items()}


def interval_rows(frame: pd.DataFrame, by: list[str], metrics) -> pd.DataFrame:
    rows = []
    for keys, group in frame.groupby(by, sort=True):
        for metric in metrics:
            values = group[metric].dropna().to_numpy()
            bounded = any(word in metric for word in ("accuracy", "fraction", "ece"))
            mean, low, high = t_interval(values, bounds=(0.0, 1.0) if bounded else None)
            rows.append({**dict(zip(by, keys)), "metric": metric, "mean": mean, "ci_low": low, "ci_high": high,
                         "n": len(values)})
    return pd.DataFrame(rows)


def with_reach(summary: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Adds to every (dataset, model, method, budget) row of a summary: `seeds` (runs tuned at that budget, feasible or
    not), `reached_seeds` (those whose validation operating points reach the budget, bench/tune/reach.py) and
    `reached` (every seed reached it; False flags a budget the policy cannot spend: the summary then
    describes a cheaper point)."""
    if summary.empty:
        return summary
    by = [*SETTING, "method", "budget"]
    flags = rows.groupby(by)["reached"].agg(reached_seeds="sum", seeds="count").reset_index()
    flags["reached_seeds"] = flags["reached_seeds"].astype(int)
    flags["reached"] = flags["reached_seeds"] == flags["seeds"]
    return summary.merge(flags, on=by, how="left")


def significance(per_exit: pd.DataFrame, budgets: pd.DataFrame, reference: str, alpha: float) -> pd.DataFrame:
    """Every method vs the reference, paired by seed, per dataset × model; Holm over each dataset × model's family."""
    per_exit, budgets = with_model(per_exit, None), with_model(budgets, None)  # tables made by hand: one model
    deepest = per_exit[per_exit["exit"] == per_exit.groupby([*SETTING, "method"])["exit"].transform("max")]
    long = [deepest.assign(comparison="deepest exit", value=deepest["test_accuracy"])]
    for metric in ("test_accuracy", "test_early_exit_accuracy"):
        long.append(budgets.assign(comparison=budgets["budget"].map(lambda b: f"{metric} at budget {b:g}"),
                                   value=budgets[metric]))
    long = pd.concat(long)[[*SETTING, "method", "seed", "comparison", "value"]].dropna()
    rows = []
    for (dataset, model, comparison), group in long.groupby([*SETTING, "comparison"]):
        ref = group[group["method"] == reference].set_index("seed")["value"]
        for method, other in group[group["method"] != reference].groupby("method"):
            paired = other.set_index("seed")["value"].to_frame("value").join(ref.rename("reference"), how="inner")
            rows.append({"dataset": dataset, "model": model, "comparison": comparison, "method": method,
                         "reference": reference,
                         **paired_test(paired["value"].to_numpy(), paired["reference"].to_numpy())})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = float("nan")
    for _, index in table.groupby(SETTING).groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p_value"].to_numpy())
    table["significant"] = (table["p_holm"] < alpha) & (table["n"] >= 3)
    table["note"] = table["n"].map(lambda n: "fewer than 3 paired seeds: not tested" if n < 3 else
                                   ("few seeds: low power" if n < 5 else ""))
    return table


def aggregate(params: dict) -> dict:
    analyse = params["analyse"]
    frames = collect(params)
    for name, frame in frames.items():
        write_csv(RESULTS / f"{name}.csv", frame)
    per_exit, budgets = frames["per_exit"], frames["budgets"]
    tuned = budgets[(budgets["calibrator"] == "optuna_per_exit") & budgets["feasible"]]
    if tuned.empty:  # nothing to compare at any budget (seen with a method whose exits all but never answer)
        raise BenchError(f"no run of the grid reaches any of the budgets {params['tune']['budgets']} (every "
                         f"results/tune/*/*/*/*/tuning.json says feasible: false); add a method that can exit early "
                         f"or raise tune.budgets")
    exit_summary = interval_rows(per_exit, [*SETTING, "method", "exit"], ("test_accuracy", "test_ece"))
    fraction_columns = [c for c in tuned.columns if c.startswith("test_exit")]
    budget_summary = interval_rows(tuned, [*SETTING, "method", "budget"], (*BUDGET_METRICS, *fraction_columns))
    budget_summary = with_reach(budget_summary, budgets[budgets["calibrator"] == "optuna_per_exit"])
    write_csv(RESULTS / "summary_exits.csv", exit_summary)
    write_csv(RESULTS / "summary_budgets.csv", budget_summary)
    write_csv(RESULTS / "significance.csv", significance(per_exit, tuned, analyse["reference"], analyse["alpha"]))

    metrics: dict = {"flops_unit": per_exit["flops_unit"].iloc[0], "counter": per_exit["counter"].iloc[0],
                     "failed_runs": len(frames["failed_runs"])}
    deepest = exit_summary[exit_summary["exit"] == exit_summary.groupby([*SETTING, "method"])["exit"].transform("max")]
    for row in deepest[deepest["metric"] == "test_accuracy"].itertuples():  # dataset → model → method
        metrics.setdefault(row.dataset, {}).setdefault(row.model, {})[row.method] = {
            "deepest_exit_test_accuracy": row.mean, "seeds": row.n}
    for row in budget_summary[budget_summary["metric"].isin(["test_accuracy", "test_flops_fraction"])].itertuples():
        entry = metrics[row.dataset][row.model][row.method].setdefault(f"budget_{row.budget:g}", {})
        entry[row.metric], entry["reached"] = row.mean, bool(row.reached)
    write_json(RESULTS / "metrics.json", metrics)
    write_json(RESULTS / "headline.json", headline(per_exit, tuned))
    return metrics
