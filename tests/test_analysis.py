"""Analysis: statistics against slow references, and figures/report from synthetic aggregated results,
checking the data behind each plot (not the pixels)."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.analyse import figures
from bench.analyse.aggregate import interval_rows, significance
from bench.analyse.report import discussion, measured, values, write_report
from bench.analyse.stats import calibration_bins, holm, paired_test, t_interval
from tests.conftest import ROOT


def test_t_interval_matches_hand_computation():
    values = [0.90, 0.92, 0.91]
    mean, low, high = t_interval(values)
    half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert mean == pytest.approx(0.91) and high - low == pytest.approx(2 * half)
    assert math.isnan(t_interval([0.9])[1])


def test_the_report_names_every_environment_its_runs_recorded_not_the_first_runs():
    runs = pd.DataFrame({"git_commit": ["b", "a", "b", "b"], "device": ["cpu"] * 4, "threads": [2, 2, 2, 2]})
    assert values(runs, "device") == "cpu" and values(runs, "threads") == "2"
    assert values(runs, "git_commit") == "a (1 run) / b (3 runs)"  # a study resumed at another commit says so


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


DENSE = [0.2, 0.4, 0.6, 0.8, 1.0]


def synthetic_results(folder):
    """Aggregated tables of 3 methods × 3 seeds × 2 budgets × 3 exits, made up but consistent."""
    rng = np.random.default_rng(1)
    methods, seeds, budgets, exits = ["branchynet", "hard_cgt", "soft_cgt"], [0, 1, 2], [0.3, 0.6], [0, 1, 2]
    flops = [1_000_000, 3_000_000, 5_000_000]
    per_exit, budget_rows, grad, calib, runs, points = [], [], [], [], [], []
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
            for b in DENSE:  # hard_cgt's policy has no operating point between 0.2 and 0.7 (like PABEE's patience)
                cost = 0.2 if method == "hard_cgt" and b < 0.7 else b
                points.append({"dataset": "toy", "method": method, "seed": seed, "policy": "max_softmax",
                               "calibrator": "exact_single", "budget": b, "val_flops_fraction": cost,
                               "test_flops_fraction": cost + 0.01 * seed, "test_accuracy": 0.8 + 0.1 * cost + 0.01 * seed})
            for budget in budgets:
                fractions = rng.dirichlet(np.ones(3))
                cost = 0.2 if method == "hard_cgt" and budget > 0.5 else budget
                points.append({"dataset": "toy", "method": method, "seed": seed, "policy": "max_softmax",
                               "calibrator": "optuna_per_exit", "budget": budget, "val_flops_fraction": cost,
                               "test_flops_fraction": cost, "test_accuracy": 0.8 + 0.1 * cost})
                budget_rows.append({"dataset": "toy", "method": method, "seed": seed, "budget": budget,
                                    "policy": "max_softmax", "val_flops_fraction": cost,
                                    "calibrator": "optuna_per_exit", "feasible": True,
                                    "test_accuracy": 0.8 + 0.1 * budget + 0.01 * m + rng.normal(0, 0.005),
                                    "test_flops_fraction": budget, "test_expected_flops": budget * 5e6 * (1 + 0.01 * m),
                                    "test_early_exit_accuracy": 0.9,
                                    **{f"test_exit{k}_fraction": fractions[k] for k in exits}})
    tables = {"per_exit": pd.DataFrame(per_exit), "budgets": pd.DataFrame(budget_rows), "grad_stats": pd.DataFrame(grad),
              "calibration": pd.DataFrame(calib), "runs": pd.DataFrame(runs), "operating_points": pd.DataFrame(points)}
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

    curves = figures.dense_curves(tables["operating_points"], tables["runs"])
    acc, cost = curves["accuracy"].to_numpy(), curves["cost"].to_numpy()
    for i in range(len(curves)):  # the frontier flag against a brute-force dominance check
        dominated = any(acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
                        for j in range(len(curves)))
        duplicate = any(acc[j] == acc[i] and cost[j] == cost[i] for j in range(i))  # the first one is kept
        assert curves["frontier"].iloc[i] == (not dominated and not duplicate)
    one = curves.query("method == 'soft_cgt' and budget == 0.4").iloc[0]  # mean over the 3 seeds, by hand
    assert one["cost"] == pytest.approx(0.4 + 0.01) and one["accuracy"] == pytest.approx(0.8 + 0.04 + 0.01)
    unreached = curves[~curves["reached"]]
    assert set(unreached["method"]) == {"hard_cgt"} and sorted(unreached["budget"]) == [0.4, 0.6]  # 0.2: its own cost
    tuned = figures.tuned_points(tables["operating_points"], tables["runs"]).set_index(["method", "budget"])
    assert tuned.loc[("hard_cgt", 0.6), "reached_seeds"] == 0 and tuned.loc[("hard_cgt", 0.3), "reached_seeds"] == 3
    assert (tuned.loc["soft_cgt", "reached_seeds"] == 3).all()

    fractions = figures.exit_fraction_data(tables["summary_budgets"])
    sums = fractions.groupby(["method", "budget"])["mean"].sum()
    assert np.allclose(sums, 1.0)

    reliability = figures.reliability_data(tables["calibration"])
    one = tables["calibration"].query("method == 'soft_cgt' and exit == 1 and bin == 7")
    assert one["count"].sum() > 0  # the synthetic data has samples there
    expected = (one["accuracy"] * one["count"]).sum() / one["count"].sum()
    got = reliability.query("method == 'soft_cgt' and exit == 1 and bin == 7")
    assert got["accuracy"].iloc[0] == pytest.approx(expected)

    report = write_report(tmp_path / "results", tmp_path / "figures", params(claims="claims/cgt.yaml")).read_text()
    assert "## Headline results" in report and "## Paired comparisons" in report
    assert "pareto_toy.png" in report and "FLOPs per sample" in report
    assert report.count("| hard_cgt |") >= 1
    assert "Not computed: results/threshold_curves.csv" in report  # the synthetic tables have no evaluate outputs
    hard = next(line for line in report.splitlines() if line.startswith("| hard_cgt |")).split("|")  # headline row
    assert "† 3/3" in hard[6] and "†" not in hard[3]  # budget 0.6 filled with the cheapest point; 0.3 reached


def params(claims=None, **figures):
    return {"train": {"toy": {"epochs": 2}},
            "analyse": {"reference": "branchynet", "alpha": 0.05, "claims": claims, "figures": figures}}


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # claims files are named relative to the project


def test_report_reads_clean_and_references_every_figure(tmp_path, in_repo):
    synthetic_results(tmp_path / "results")
    significance = pd.read_csv(tmp_path / "results" / "significance.csv")
    significance.loc[0, "note"] = np.nan  # 5+ seeds: no note (read back as NaN)
    significance.to_csv(tmp_path / "results" / "significance.csv", index=False)
    figures.make_figures(tmp_path / "results", tmp_path / "figures")
    report = write_report(tmp_path / "results", tmp_path / "figures", params()).read_text()
    assert not re.search(r"\bnan\b", report, flags=re.IGNORECASE)
    for path in (tmp_path / "figures").iterdir():
        assert f"../figures/{path.name}" in report  # PNG and PDF
    for kind, caption in figures.CAPTIONS.items():
        assert caption in report
    compute = report[report.index("## Compute"):report.index("## Figures")]
    assert compute.count("| hard_cgt |") == 1 and compute.count("\n| ---") == 1  # one table, one row per method


def test_a_study_without_claims_has_no_claims_section(tmp_path):
    synthetic_results(tmp_path / "results")
    report = write_report(tmp_path / "results", tmp_path / "figures", params()).read_text()
    assert "Claim" not in report and "Discussion" not in report
    assert pd.read_csv(tmp_path / "results" / "claims.csv").empty  # the stage's output exists, with no rows


def method_colours(captured) -> dict[str, set]:
    """Every method's colours over all drawn figures (lines, bars, panel titles)."""
    from matplotlib.colors import to_hex

    seen: dict[str, set] = {}
    for fig in captured:
        for ax in fig.axes:
            for line in ax.lines:
                seen.setdefault(line.get_label().split(" (")[0], set()).add(to_hex(line.get_color()))
            for container in ax.containers:
                label = container.get_label()
                if label and not label.startswith("_"):
                    seen.setdefault(label, set()).add(to_hex(container.patches[0].get_facecolor()))
            if ax.get_title():
                seen.setdefault(ax.get_title(), set()).add(to_hex(ax.title.get_color()))
    return seen


def test_one_colour_per_method_in_every_figure_and_figures_show_the_chosen_methods(tmp_path, monkeypatch, in_repo):
    synthetic_results(tmp_path / "results")
    captured = []
    monkeypatch.setattr(figures, "save", lambda fig, folder, name: captured.append(fig) or [])
    figures.make_figures(tmp_path / "results", tmp_path / "figures",
                         params(claims=None, grad_norm=["soft_cgt"], calibration="claims")["analyse"])
    styles = figures.method_styles(["branchynet", "hard_cgt", "soft_cgt"])
    seen = method_colours(captured)
    from matplotlib.colors import to_hex
    for method, look in styles.items():
        assert seen[method] == {to_hex(look["color"])}
    grad = next(f for f in captured if "gradient" in f._suptitle.get_text())
    assert {line.get_label() for ax in grad.axes for line in ax.lines} == {"soft_cgt"}
    pareto = next(f for f in captured if "expected cost" in f._suptitle.get_text())
    assert [ax.get_title() for ax in pareto.axes if ax.get_visible()] == ["branchynet", "hard_cgt", "soft_cgt"]
    assert len({look["color"] for look in figures.method_styles([f"m{i}" for i in range(20)]).values()}) == 20


def test_figures_select_methods_from_params(in_repo):
    available = ["branchynet", "hard_cgt", "joint", "sdn", "soft_cgt"]
    analyse = {"reference": "branchynet", "claims": "claims/cgt.yaml",
               "figures": {"pareto": "all", "grad_norm": "claims", "calibration": ["sdn", "nope"]}}
    assert figures.select("pareto", available, analyse) == available
    assert figures.select("grad_norm", available, analyse) == ["branchynet", "hard_cgt", "joint", "soft_cgt"]
    assert figures.select("calibration", available, analyse) == ["sdn"]
    assert figures.select("grad_norm", available, {**analyse, "claims": None}) == available  # no claims: all


def test_imputed_values_are_marked_and_never_get_an_interval():
    row = {"mean": -121.4, "ci_low": -127.3, "ci_high": -115.6, "n": 5, "unit": "%", "seeds_not_matched": 5.0}
    assert measured(row) == "-121.40 % (all 5 seeds imputed: no interval)"
    assert measured({**row, "seeds_not_matched": 1.0}) == "-121.40 [-127.30, -115.60] % (1 of 5 seeds imputed)"
    assert measured({**row, "seeds_not_matched": 0.0}) == "-121.40 [-127.30, -115.60] %"


def test_discussion_is_generated_from_the_verdicts():
    table = pd.DataFrame([
        {"claim": "5", "dataset": "a", "part": "x vs y", "comparison": "share early, τ 0.9", "verdict": "supported",
         "primary": True, "claim_verdict": "inconclusive"},
        {"claim": "5", "dataset": "a", "part": "x vs y", "comparison": "gradient norm: 1 − y/x", "verdict": "inconclusive",
         "primary": True, "claim_verdict": "inconclusive"},
        {"claim": "5", "dataset": "b", "part": "x vs y", "comparison": "share early, τ 0.9", "verdict": "supported",
         "primary": True, "claim_verdict": "supported"},
        {"claim": "5", "dataset": "b", "part": "x vs y", "comparison": "gradient norm: 1 − y/x", "verdict": "supported",
         "primary": True, "claim_verdict": "supported"}])
    text = "\n".join(discussion(table, [{"id": "5", "text": "x starves y"}]))
    assert "2 verdicts: 1 supported, 0 not supported, 1 inconclusive" in text
    assert "inconclusive on a; supported on b" in text
    assert "On a: supported: share early (x vs y); inconclusive: gradient norm (x vs y)." in text


def test_intervals_are_clipped_to_the_metric_range_and_degenerate_tests_give_no_p_value():
    mean, low, high = t_interval([0.99, 0.999], bounds=(0.0, 1.0))
    assert high == 1.0 and low < mean
    result = paired_test([0.91, 0.92], [0.90, 0.91])  # identical differences: undefined t statistic
    assert math.isnan(result["p_value"]) and result["mean_difference"] == pytest.approx(0.01)


def test_the_tune_stage_reached_flag_wins_over_the_interim_rule():
    row = {"dataset": "d", "method": "m", "seed": 0, "policy": "p", "budget": 0.5, "val_flops_fraction": 0.2}
    points = pd.DataFrame([{**row, "budget": b} for b in (0.3, 0.5)])
    assert not figures.reached(pd.DataFrame([row]), points).iloc[0]  # cheapest point, 0.3 below the budget
    assert figures.reached(pd.DataFrame([{**row, "reached": True}]), points).iloc[0]  # recorded by tune: trusted
    assert figures.reached(pd.DataFrame([{**row, "budget": 0.22}]), points).iloc[0]  # within UNREACHED_GAP


def test_gradient_figure_leaves_out_steps_that_train_no_exit_but_keeps_a_starved_exit():
    rows = [{"dataset": "d", "method": "m", "seed": 0, "step": step, "exit": k, "batch_size": 10,
             "samples_with_grad": 10, "effective_samples": shares[k], "backbone_grad_norm": 1.0, "head_grad_norm": 1.0}
            for step, shares in ((0, [10.0, 0.0]), (50, [0.0, 0.0]), (100, [5.0, 2.0])) for k in range(2)]
    data = figures.grad_data(pd.DataFrame(rows))
    assert sorted(data["step"].unique()) == [0, 100]  # step 50: a gate step, no exit trained
    starved = data.query("exit == 1 and step == 0")["effective_share"].iloc[0]
    assert starved == 0.0 and data.query("exit == 0 and step == 100")["effective_share"].iloc[0] == 0.5
