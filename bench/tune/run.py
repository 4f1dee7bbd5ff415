"""The tune stage for one run: Optuna per budget, the exact single-threshold reference, risk control and
the Pareto set, all fitted on validation logits and applied once to test."""

from __future__ import annotations

import time
from typing import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from bench.evaluate.thresholds import load_logits, read_run_metrics, run_record
from bench.evaluate.policies import POLICIES
from bench.io import atomic_path, write_csv, write_json
from bench.tune.cached import CachedSplit
from bench.tune.exact import best_single_threshold, finite_threshold, single_threshold_curve
from bench.tune.pareto import pareto_mask
from bench.tune.reach import reach
from bench.tune.risk import calibrate, prediction_gap
from bench.tune.search import tune_thresholds


def load_splits(run_dir: Path, policy_name: str) -> tuple[CachedSplit, CachedSplit, dict]:
    """Validation and test caches of one finished run for a policy ("method": the method's own)."""
    metrics = read_run_metrics(run_dir)
    logits = load_logits(run_dir)
    policy_name = metrics["method"]["exit_policy"] if policy_name == "method" else policy_name
    policy = POLICIES.get(policy_name, where="tune.policy")
    metrics["tuned_policy"] = policy_name
    flops = metrics["exit_costs"]["flops"]
    splits = [CachedSplit.from_logits(policy, logits[s]["logits"], logits[s]["labels"], logits[s].get("extras"), flops)
              for s in ("val", "test")]
    return splits[0], splits[1], metrics


def choose(val: CachedSplit, test: CachedSplit, thresholds, **info) -> dict:
    return {**info, "thresholds": thresholds, "val": val.report(thresholds), "test": test.report(thresholds)}


def persist_studies(studies: list[optuna.Study], folder: Path, storage: str) -> Path:
    """Write every study (all trials) atomically, openable with `optuna-dashboard FILE`. Studies run in
    memory first: Optuna's SQLite storage costs ~65 ms per trial here (measured), the journal ~6 ms."""
    path = studies_path(folder, storage)
    with atomic_path(path) as tmp:
        if storage == "sqlite":
            target = f"sqlite:///{tmp}"
        else:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            target = JournalStorage(JournalFileBackend(str(tmp)))
        for study in studies:
            optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=target)
    return path


def dense_operating_points(val: CachedSplit, test: CachedSplit, run: dict, policy_name: str, count: int,
                           tolerance: float, tuned: list[dict] = (), curve: dict | None = None) -> pd.DataFrame:
    """The exact single-threshold optimum on validation at `count` evenly spaced budgets (plus the tuned
    per-budget choices), each applied to test, one row per (calibrator, budget); `pareto` marks the
    test-set non-dominated points, `reached` / `reachable_cost` whether the policy can spend the budget
    (bench/tune/reach.py)."""
    curve = curve if curve is not None else single_threshold_curve(val)
    policy = POLICIES.get(policy_name)
    points = []
    for budget in np.linspace(0.0, 1.0, count + 1)[1:]:
        index = best_single_threshold(curve, float(budget))
        if index is not None:
            t = finite_threshold(curve["threshold"][index], policy.high)
            reachable, reached = reach(curve["flops_fraction"], float(budget), tolerance)
            points.append(choose(val, test, [t] * (val.num_exits - 1), budget=float(budget), calibrator="exact_single",
                                 reachable_cost=reachable, reached=reached))
    points += [r for r in tuned if r.get("feasible")]
    frame = pd.DataFrame([{**run, "policy": policy_name, "budget": p["budget"], "calibrator": p["calibrator"],
                           "thresholds": " ".join(f"{t:.17g}" for t in p["thresholds"]),  # exact round trip
                           "reached": p["reached"], "reachable_cost": p["reachable_cost"],
                           **{f"{split}_{key}": p[split][key] for split in ("val", "test")
                              for key in ("accuracy", "flops_fraction", "early_exit_fraction", "ece")},
                           "test_expected_flops": p["test"]["expected_flops"]} for p in points])
    frame = frame.drop_duplicates(["calibrator", "budget"], ignore_index=True)  # a tuned budget on the dense grid
    frame["pareto"] = pareto_mask(frame["test_accuracy"].to_numpy(), frame["test_flops_fraction"].to_numpy())
    return frame


def studies_path(folder: Path, storage: str) -> Path:
    return folder / ("optuna.db" if storage == "sqlite" else "optuna.journal")


def tune_outputs(dataset: str, model: str, method: str, seed: int, params: dict) -> list[Path]:
    """The files `tune_run` writes for a run of the study layout besides tuning.json (written last)."""
    from bench.paths import study_dir, tune_dir

    folder = tune_dir(dataset, model, method, seed)
    return [folder / "pareto.csv", folder / "operating_points.csv",
            studies_path(study_dir(dataset, model, method, seed), params["storage"])]


def tune_run(run_dir: Path, out_dir: Path, params: dict, seed: int, study_dir: Path | None = None,
             model: str | None = None, stamp: Callable[[], dict] | None = None) -> dict:
    """Tune one run's thresholds into `out_dir` (its Optuna studies into `study_dir`); tuning.json comes last,
    with `stamp()` (bench/derived.py) computed once every other output is written."""
    study_dir = study_dir or out_dir
    failure = read_run_metrics(run_dir)
    if failure.get("status") == "failed":  # nothing to tune; the aggregate reports the run as failed
        for name in ("pareto.csv", "operating_points.csv"):
            write_csv(out_dir / name, pd.DataFrame(columns=["dataset", "model", "method", "seed"]))
        persist_studies([], study_dir, params["storage"])
        result = {"status": "failed", "run": run_record(failure, model), "reason": failure["reason"], "budgets": []}
        write_json(out_dir / "tuning.json", {**result, **({"stamp": stamp()} if stamp else {})})
        return result
    val, test, metrics = load_splits(run_dir, params["policy"])
    policy_name = metrics["tuned_policy"]
    policy = POLICIES.get(policy_name)
    k = val.num_exits
    started = time.perf_counter()
    curve = single_threshold_curve(val)
    exact_seconds = time.perf_counter() - started

    budgets, studies = [], []
    for budget in params["budgets"]:
        index = best_single_threshold(curve, budget)
        single = finite_threshold(curve["threshold"][index], policy.high) if index is not None else None
        started = time.perf_counter()
        thresholds, study = tune_thresholds(val, policy, budget, params["trials"], params["seed"] + seed,
                                            warm_start=[single] * (k - 1) if single is not None else None,
                                            study_name=f"budget{budget}")
        seconds = time.perf_counter() - started
        studies.append(study)
        trial_costs = [t.user_attrs["flops_fraction"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        for calibrator, chosen in (("optuna_per_exit", thresholds), ("exact_single", [single] * (k - 1) if single is not None else None)):
            considered = [*curve["flops_fraction"], *(trial_costs if calibrator == "optuna_per_exit" else [])]
            reachable, reached = reach(considered, budget, params["reach_tolerance"])
            if chosen is None:
                budgets.append({"budget": budget, "calibrator": calibrator, "feasible": False,
                                "reachable_cost": reachable, "reached": reached})
                continue
            row = choose(val, test, chosen, budget=budget, calibrator=calibrator, feasible=True,
                         reachable_cost=reachable, reached=reached)
            row["test_cost_minus_budget"] = row["test"]["flops_fraction"] - budget
            if calibrator == "optuna_per_exit":
                row["seconds"] = seconds
                row["trials"] = params["trials"]
            budgets.append(row)
        per_exit = next(r for r in budgets[::-1] if r["calibrator"] == "optuna_per_exit")
        reference = budgets[-1]
        if per_exit.get("feasible") and reference.get("feasible"):
            per_exit["val_gain_over_single"] = per_exit["val"]["accuracy"] - reference["val"]["accuracy"]
            per_exit["worse_than_single_on_val"] = per_exit["val_gain_over_single"] < 0

    grid = np.r_[policy.high + 1.0, np.linspace(policy.high, policy.low, params["risk_grid"])]
    risk = []
    for epsilon in params["risk_epsilons"]:
        for method in ("crc", "ucb"):
            threshold = calibrate(val, grid, epsilon, params["risk_delta"], method)
            row = choose(val, test, [threshold] * (k - 1), calibrator=method, epsilon=epsilon, delta=params["risk_delta"])
            row["test_risk"] = float(prediction_gap(test, threshold).mean())
            row["val_risk"] = float(prediction_gap(val, threshold).mean())
            risk.append(row)

    run = run_record(metrics, model)
    frame = pd.concat([dense_operating_points(val, test, run, policy_name, params["pareto_budgets"],
                                              params["reach_tolerance"], budgets, curve)]
                      + [dense_operating_points(*load_splits(run_dir, name)[:2], run, name,
                                                params["pareto_budgets"], params["reach_tolerance"])
                         for name in params["reference_policies"] if name != policy_name], ignore_index=True)
    own = frame[frame["policy"] == policy_name]
    write_csv(out_dir / "pareto.csv", own[own["pareto"]].drop(columns="pareto").sort_values("test_flops_fraction"))
    write_csv(out_dir / "operating_points.csv", frame)

    persist_studies(studies, study_dir, params["storage"])
    result = {"status": "ok", "run": run, "policy": policy_name, "flops_unit": metrics["exit_costs"]["unit"],
              "exit_flops": metrics["exit_costs"]["flops"], "budgets": budgets, "risk_control": risk,
              "exact_sweep_seconds": exact_seconds, "curve_points": int(len(curve["threshold"]))}
    write_json(out_dir / "tuning.json", {**result, **({"stamp": stamp()} if stamp else {})})
    return result
