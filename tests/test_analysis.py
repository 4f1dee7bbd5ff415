"""Analysis: statistics against slow references, and figures/report from synthetic aggregated results,
checking the data behind each plot (not the pixels)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.analyse import figures
from bench.analyse.aggregate import interval_rows, significance
from bench.analyse.report import write_report
from bench.config import CLAIMS_DEFAULTS
from bench.analyse.stats import calibration_bins, holm, paired_test, t_interval


def test_t_interval_matches_hand_computation():
    values = [0.90, 0.92, 0.91]
    mean, low, high = t_interval(values)
    half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert mean == pytest.approx(0.91) and high - low == pytest.approx(2 * half)
    assert math.isnan(t_interval([0.9])[1])


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    # sorted valid: 0.01*4, 0.03*3, 0.04*2, 0.5*1 → running max
    expected = [0.04, 0.09, 0.09, np.nan, 0.5]
    assert np.allclose(holm(p), expected, equal_nan=True)


def test_paired_test_matches_scipy():
    a, b = [0.91, 0.92, 0.90, 0.93], [0.90, 0.90, 0.89, 0.92]
    result = paired_test(a, b)
    assert result["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    diff = np.subtract(a, b)
    assert result["effect_size_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1))


def test_ece_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 500)
    correct = rng.uniform(0, 1, 500) < confidence ** 2
    ece = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = (confidence >= lo) & ((confidence < hi) if b < 14 else (confidence <= hi))
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    result = calibration_bins(confidence, correct)
    assert result["ece"] == pytest.approx(ece) and sum(result["count"]) == 500


def synthetic_results(folder):
    """Aggregated tables of 3 methods × 3 seeds × 2 budgets × 3 exits, made up but consistent."""
    rng = np.random.default_rng(1)
    methods, seeds, budgets, exits = ["branchynet", "hard_cgt", "soft_cgt"], [0, 1, 2], [0.3, 0.6], [0, 1, 2]
    flops = [1_000_000, 3_000_000, 5_000_000]
    per_exit, budget_rows, grad, calib, runs = [], [], [], [], []
    for m, method in enumerate(methods):
        for seed in seeds:
            runs.append({"dataset": "toy", "method": method, "seed": seed, "seconds_per_epoch": 1.0, "epochs": 2,
                         "torch": "2.13.0", "threads": 2, "device": "cpu", "git_commit": "abc", "exit_policy": "max_softmax",
                         "train_size": 100, "val_size": 20, "test_size": 50})
            for k in exits:
                per_exit.append({"dataset": "toy", "method": method, "seed": seed, "exit": k,
                                 "test_accuracy": 0.7 + 0.1 * k + 0.01 * m + rng.normal(0, 0.005),
                                 "val_accuracy": 0.8, "test_ece": 0.05 + 0.01 * rng.random(),
                                 "cumulative_flops": flops[k], "cumulative_macs": flops[k] // 2,
                                 "flops_unit": "FLOPs per sample", "counter": "FlopCounterMode"})
                for b in range(15):
                    calib.append({"dataset": "toy", "method": method, "seed": seed, "exit": k, "bin": b,
                                  "count": int(rng.integers(0, 5)), "confidence": (b + 0.5) / 15, "accuracy": rng.random()})
                for step in (0, 10, 20):
                    grad.append({"dataset": "toy", "method": method, "seed": seed, "exit": k, "step": step,
                                 "backbone_grad_norm": rng.random() + 0.1, "head_grad_norm": rng.random(),
                                 "samples_with_grad": 30, "effective_samples": 20.0, "batch_size": 32})
            for budget in budgets:
                fractions = rng.dirichlet(np.ones(3))
                budget_rows.append({"dataset": "toy", "method": method, "seed": seed, "budget": budget,
                                    "calibrator": "optuna_per_exit", "feasible": True,
                                    "test_accuracy": 0.8 + 0.1 * budget + 0.01 * m + rng.normal(0, 0.005),
                                    "test_flops_fraction": budget, "test_expected_flops": budget * 5e6 * (1 + 0.01 * m),
                                    "test_early_exit_accuracy": 0.9,
                                    **{f"test_exit{k}_fraction": fractions[k] for k in exits}})
    tables = {"per_exit": pd.DataFrame(per_exit), "budgets": pd.DataFrame(budget_rows), "grad_stats": pd.DataFrame(grad),
              "calibration": pd.DataFrame(calib), "runs": pd.DataFrame(runs)}
    tables["summary_exits"] = interval_rows(tables["per_exit"], ["dataset", "method", "exit"], ("test_accuracy", "test_ece"))
    fraction_columns = [f"test_exit{k}_fraction" for k in exits]
    tables["summary_budgets"] = interval_rows(tables["budgets"], ["dataset", "method", "budget"],
                                              ("test_accuracy", "test_expected_flops", "test_flops_fraction",
                                               "test_early_exit_accuracy", *fraction_columns))
    tables["significance"] = significance(tables["per_exit"], tables["budgets"], "branchynet", 0.05)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return tables


def test_summary_intervals_match_hand_computation(tmp_path):
    tables = synthetic_results(tmp_path / "results")
    row = tables["summary_exits"].query("method == 'hard_cgt' and exit == 2 and metric == 'test_accuracy'").iloc[0]
    values = tables["per_exit"].query("method == 'hard_cgt' and exit == 2")["test_accuracy"]
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert row["n"] == 3 and row["ci_high"] - row["ci_low"] == pytest.approx(2 * half)


def test_significance_table_pairs_seeds_and_corrects(tmp_path):
    table = synthetic_results(tmp_path / "results")["significance"]
    assert set(table["method"]) == {"hard_cgt", "soft_cgt"} and (table["n"] == 3).all()
    assert np.allclose(table["p_holm"], holm(table["p_value"].to_numpy()), equal_nan=True)
    assert (table["note"] == "few seeds: low power").all()


def test_figures_and_report_from_aggregated_tables(tmp_path):
    tables = synthetic_results(tmp_path / "results")
    paths = figures.make_figures(tmp_path / "results", tmp_path / "figures")
    names = {p.name for p in paths}
    for kind in ("pareto", "exit_distribution", "grad_norm", "per_exit_accuracy", "calibration"):
        assert {f"{kind}_toy.pdf", f"{kind}_toy.png"} <= names
        assert (tmp_path / "figures" / f"{kind}_toy.png").stat().st_size > 1000

    again = figures.make_figures(tmp_path / "results", tmp_path / "figures_again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # no dates: same tables, same files

    frontier = figures.pareto_data(tables["summary_budgets"])
    acc, cost = frontier["test_accuracy_mean"].to_numpy(), frontier["test_expected_flops_mean"].to_numpy()
    for i in range(len(frontier)):
        dominated = any(acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
                        for j in range(len(frontier)))
        assert frontier["frontier"].iloc[i] == (not dominated)

    fractions = figures.exit_fraction_data(tables["summary_budgets"])
    sums = fractions.groupby(["method", "budget"])["mean"].sum()
    assert np.allclose(sums, 1.0)

    reliability = figures.reliability_data(tables["calibration"])
    one = tables["calibration"].query("method == 'soft_cgt' and exit == 1 and bin == 7")
    assert one["count"].sum() > 0  # the synthetic data has samples there
    expected = (one["accuracy"] * one["count"]).sum() / one["count"].sum()
    got = reliability.query("method == 'soft_cgt' and exit == 1 and bin == 7")
    assert got["accuracy"].iloc[0] == pytest.approx(expected)

    params = {"train": {"toy": {"epochs": 2}}, "analyse": {"reference": "branchynet", "alpha": 0.05,
                                                            "claims": CLAIMS_DEFAULTS}}
    report = write_report(tmp_path / "results", tmp_path / "figures", params).read_text()
    assert "## Headline results" in report and "## Paired comparisons" in report
    assert "pareto_toy.png" in report and "FLOPs per sample" in report
    assert report.count("| hard_cgt |") >= 1
    assert "Not computed: results/operating_points.csv" in report  # the synthetic tables have no tune outputs


def test_intervals_are_clipped_to_the_metric_range_and_degenerate_tests_give_no_p_value():
    mean, low, high = t_interval([0.99, 0.999], bounds=(0.0, 1.0))
    assert high == 1.0 and low < mean
    result = paired_test([0.91, 0.92], [0.90, 0.91])  # identical differences: undefined t statistic
    assert math.isnan(result["p_value"]) and result["mean_difference"] == pytest.approx(0.01)
