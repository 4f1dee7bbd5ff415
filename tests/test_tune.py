"""Budget-targeted tuning: the exact sweep against brute force, Optuna against a grid, no leakage from
test, budgets respected on validation, and risk control at the stated rate."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.evaluate.policies import POLICIES, exit_indices
from bench.io import save_torch, write_json
from bench.tune.cached import CachedSplit
from bench.tune.exact import best_single_threshold, single_threshold_curve
from bench.tune.pareto import pareto_mask
from bench.config import TUNE_DEFAULTS
from bench.tune.risk import calibrate, prediction_gap
from bench.tune.run import tune_run
from bench.tune.search import tune_thresholds

FLOPS = [100, 260, 500]
PARAMS = {**TUNE_DEFAULTS, "budgets": [0.4, 0.7], "trials": 60, "storage": "journal", "pareto_budgets": 10,
          "risk_epsilons": [0.05], "risk_grid": 41}


def synthetic_logits(n, seed, k=3, c=5, difficulty=None):
    """Deeper exits are more accurate; confidence correlates with correctness."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=gen)
    logits = torch.randn(k, n, c, generator=gen)
    strength = torch.tensor([1.0, 2.0, 3.5])[:k].view(k, 1) * torch.rand(1, n, generator=gen) * 2
    logits[torch.arange(k).view(k, 1), torch.arange(n).view(1, n), labels.view(1, n)] += strength
    return logits, labels


def split_of(logits, labels, policy="max_softmax"):
    return CachedSplit.from_logits(POLICIES.get(policy), logits, labels, {}, FLOPS)


def brute_force(split, thresholds):
    exits = exit_indices(split.scores, torch.as_tensor(thresholds, dtype=torch.float64))
    correct = int(split.correct.gather(0, exits.view(1, -1)).sum())
    return correct, int(np.asarray(FLOPS)[exits.numpy()].sum())


def priority_extras(k, n, seed=5):
    """A random class_aware mask (deepest exit always allowed)."""
    mask = torch.rand(k, n, generator=torch.Generator().manual_seed(seed)) < 0.5
    mask[-1] = True
    return {"priority_mask": mask.float()}


@pytest.mark.parametrize("policy", ["max_softmax", "entropy", "patience", "beem", "class_aware"])
def test_exact_sweep_equals_brute_force(policy):
    logits, labels = synthetic_logits(400, 1)
    split = CachedSplit.from_logits(POLICIES.get(policy), logits, labels, priority_extras(3, 400), FLOPS)
    curve = single_threshold_curve(split)
    assert np.all(np.diff(curve["threshold"]) < 0) and np.all(np.diff(curve["boundary"]) < 0)
    for t, correct, flops in zip(curve["threshold"], curve["correct"], curve["total_flops"]):
        assert brute_force(split, t) == (correct, flops)
    boundary, threshold = curve["boundary"][1:], curve["threshold"][1:]
    below = np.r_[boundary[1:], split.low]
    if POLICIES.get(policy).integer:  # integer policies keep the (exact) breakpoint
        assert np.array_equal(threshold, boundary)
    else:  # every operating threshold is the midpoint between neighbouring breakpoints, never on a score
        assert np.array_equal(threshold, (boundary + below) / 2) and np.all(below < threshold)
        assert np.all(threshold < boundary)
        assert not np.isin(threshold, split.scores.numpy()).any()
    rng = np.random.default_rng(0)
    policy_range = POLICIES.get(policy).low, POLICIES.get(policy).high + 1.0
    for t in np.r_[rng.uniform(*policy_range, 200), boundary]:  # any threshold of the range, breakpoints too
        j = np.flatnonzero(curve["boundary"] >= t)[-1]  # the point whose interval (next, boundary] holds t
        assert brute_force(split, t) == (curve["correct"][j], curve["total_flops"][j])


def test_class_aware_curve_never_lets_a_non_priority_prediction_leave_early():
    logits, labels = synthetic_logits(300, 4)
    extras = priority_extras(3, 300)
    split = CachedSplit.from_logits(POLICIES.get("class_aware"), logits, labels, extras, FLOPS)
    curve = single_threshold_curve(split)
    exits = split.exits(curve["threshold"][-1])  # the most aggressive operating point
    allowed = extras["priority_mask"].bool().gather(0, exits.view(1, -1))[0]
    assert allowed.all()
    ever_allowed_early = extras["priority_mask"][:-1].bool().any(0)
    assert torch.equal(exits < 2, ever_allowed_early)  # at threshold ≤ every max softmax: exactly those leave


def test_a_tie_is_decided_the_same_way_by_evaluate_and_tune(tmp_path):
    """A score exactly float32(0.95) against the threshold 0.95: float64 comparison says it does not reach
    0.95 (float32(0.95) = 0.949999988…), in the evaluate stage's rows and in tune's cached evaluation alike."""
    from bench.evaluate.thresholds import evaluate_run

    target = float(torch.tensor(0.95, dtype=torch.float32))
    assert target < 0.95
    logit = float(np.log(target / (1 - target)))  # 2-class logits whose max softmax is float32(0.95)
    logits = torch.tensor([[[logit, 0.0]], [[0.0, 0.1]], [[0.0, 0.1]]], dtype=torch.float32)
    labels = torch.tensor([0])
    logits[0, 0, 0] = torch.tensor(logit, dtype=torch.float32)
    while POLICIES.get("max_softmax").scores(logits)[0, 0].item() < target:
        logits[0, 0, 0] = torch.nextafter(logits[0, 0, 0], torch.tensor(10.0))
    while POLICIES.get("max_softmax").scores(logits)[0, 0].item() > target:
        logits[0, 0, 0] = torch.nextafter(logits[0, 0, 0], torch.tensor(-10.0))
    assert POLICIES.get("max_softmax").scores(logits)[0, 0].item() == target  # the tie is really built

    split = split_of(logits, labels)
    assert split.exits([0.95, 0.95]).tolist() == [2] and split.exits([target, target]).tolist() == [0]
    folder = tmp_path / "run"
    folder.mkdir()
    save_torch(folder / "logits.pt", {s: {"logits": logits, "labels": labels, "extras": {}} for s in ("val", "test")})
    (folder / "grad_stats.csv").write_text("\n")  # what write_csv writes for a run too short for a measurement
    write_json(folder / "metrics.json", {"status": "ok", "run": {"dataset": "d", "method": "joint", "seed": 0},
                                         "method": {"exit_policy": "max_softmax"}, "exit_costs": {"flops": FLOPS},
                                         **{key: {} for key in ("per_exit", "time", "data", "settings", "environment")},
                                         "num_exits": 3})
    rows = [r for r in evaluate_run(folder, ["max_softmax"], [0.95])["rows"] if r["split"] == "val"]
    assert rows[0]["threshold"] == 0.95 and rows[0]["exit_fractions"] == [0.0, 0.0, 1.0]  # evaluate: not reached


def test_optuna_per_exit_is_close_to_grid_brute_force_and_feasible():
    split = split_of(*synthetic_logits(600, 2))
    budget = 0.5
    grid = np.linspace(0, 1.0, 41)
    best = max((split.evaluate([a, b])[0], a, b) for a in grid for b in grid if split.evaluate([a, b])[1] <= budget)
    curve = single_threshold_curve(split)
    single = curve["threshold"][best_single_threshold(curve, budget)]
    thresholds, study = tune_thresholds(split, POLICIES.get("max_softmax"), budget, 200, seed=0,
                                        warm_start=[single, single])
    accuracy, cost = split.evaluate(thresholds)
    assert cost <= budget
    assert accuracy >= best[0] - 0.01  # stated tolerance: one accuracy point below the 41×41 grid optimum
    assert accuracy >= split.evaluate([single, single])[0]  # never worse than the exact single threshold
    assert len(study.trials) == 200


def write_run(folder, seed=0, test_transform=None):
    val_logits, val_labels = synthetic_logits(500, seed)
    test_logits, test_labels = synthetic_logits(500, seed + 100)
    if test_transform is not None:
        test_logits, test_labels = test_transform(test_logits, test_labels)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch(folder / "logits.pt", {"val": {"logits": val_logits, "labels": val_labels, "extras": {}},
                                      "test": {"logits": test_logits, "labels": test_labels, "extras": {}}})
    write_json(folder / "metrics.json", {"run": {"dataset": "synthetic", "method": "joint", "seed": seed},
                                         "method": {"exit_policy": "max_softmax"},
                                         "exit_costs": {"flops": FLOPS, "unit": "FLOPs per sample"}})


def chosen_thresholds(result):
    return ([r.get("thresholds") for r in result["budgets"]], [r["thresholds"] for r in result["risk_control"]])


def test_test_logits_never_influence_any_fitted_quantity(tmp_path):
    write_run(tmp_path / "run")
    reference = tune_run(tmp_path / "run", tmp_path / "out", PARAMS, seed=0)
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(3))
    for name, transform in {"permuted": lambda x, y: (x[:, perm], y[perm]),
                            "perturbed": lambda x, y: (x + 5 * torch.randn_like(x), (y + 1) % 5)}.items():
        write_run(tmp_path / name, test_transform=transform)
        other = tune_run(tmp_path / name, tmp_path / f"out_{name}", PARAMS, seed=0)
        assert chosen_thresholds(other) == chosen_thresholds(reference), name
    assert json.loads((tmp_path / "out" / "tuning.json").read_text())["budgets"]


def test_budgets_hold_on_validation_and_test_deviation_is_reported(tmp_path):
    write_run(tmp_path / "run")
    result = tune_run(tmp_path / "run", tmp_path / "out", {**PARAMS, "storage": "sqlite", "trials": 20}, seed=0)
    for row in result["budgets"]:
        assert row["feasible"]
        assert row["val"]["flops_fraction"] <= row["budget"] + 1e-12
        assert row["test_cost_minus_budget"] == pytest.approx(row["test"]["flops_fraction"] - row["budget"])
        assert sum(row["test"]["exit_fractions"]) == pytest.approx(1.0)
    per_exit = [r for r in result["budgets"] if r["calibrator"] == "optuna_per_exit"]
    assert all(r["val_gain_over_single"] >= 0 and not r["worse_than_single_on_val"] for r in per_exit)
    assert (tmp_path / "out" / "optuna.db").stat().st_size > 0
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")}
    assert names == {"budget0.4", "budget0.7"}

    points = pd.read_csv(tmp_path / "out" / "operating_points.csv")  # budgets 0.4, 0.7 are also on the dense grid
    assert not points.duplicated(["policy", "calibrator", "budget"]).any()
    assert len(points[(points["calibrator"] == "exact_single") & np.isclose(points["budget"], 0.4)]) == 1


def test_pareto_mask_is_the_non_dominated_set():
    rng = np.random.default_rng(0)
    acc, cost = rng.random(60), rng.random(60)
    mask = pareto_mask(acc, cost)
    for i in range(60):
        dominated = any((acc[j] >= acc[i]) and (cost[j] <= cost[i]) and (acc[j] > acc[i] or cost[j] < cost[i])
                        for j in range(60))
        assert mask[i] == (not dominated)


def test_risk_control_respects_epsilon_at_the_stated_rate():
    """Synthetic population with known risk: repeated calibration draws, risk measured on a large test draw."""
    epsilon, delta, draws = 0.05, 0.1, 40
    test = split_of(*synthetic_logits(20000, 999))
    grid = np.r_[2.0, np.linspace(1.0, 0.0, 41)]
    violations, crc_risks = 0, []
    for draw in range(draws):
        cal = split_of(*synthetic_logits(1000, draw))
        ucb = calibrate(cal, grid, epsilon, delta, "ucb")
        violations += prediction_gap(test, ucb).mean() > epsilon
        crc_risks.append(prediction_gap(test, calibrate(cal, grid, epsilon, delta, "crc")).mean())
    assert violations / draws <= delta + 0.05  # P(risk > ε) ≤ δ, with sampling slack for 40 draws
    assert np.mean(crc_risks) <= epsilon + 0.01  # CRC controls the expected risk
    assert max(crc_risks) > 0.0  # and is not trivially conservative


def gap_logits(n, seed):
    """Every sample has the same logits at each exit, so the policy's only operating points cost 0.2 (all at
    exit 0), 0.52 (all at exit 1) and 1.0: gaps between them, as PABEE's patience has."""
    labels = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(seed))
    logits = torch.zeros(3, n, 5)
    logits[0, :, 0], logits[1, :, 1], logits[2, :, 2] = 2.0, 3.0, 4.0
    return logits, labels


def test_reach_is_false_inside_a_gap_and_true_elsewhere():
    from bench.tune.reach import reach

    curve = single_threshold_curve(split_of(*gap_logits(200, 0)))
    assert sorted(curve["flops_fraction"].round(12)) == [0.2, 0.52, 1.0]
    expected = {0.1: (None, False), 0.2: (0.2, True), 0.21: (0.2, True), 0.3: (0.2, False), 0.5: (0.2, False),
                0.52: (0.52, True), 0.535: (0.52, True), 0.7: (0.52, False), 1.0: (1.0, True)}
    for budget, (cost, reached) in expected.items():
        got = reach(curve["flops_fraction"], budget, 0.02)
        assert got[1] == reached, budget
        assert got[0] == (None if cost is None else pytest.approx(cost)), budget
    assert reach([0.2, 0.52], 0.3, 0.1) == (pytest.approx(0.2), True)  # the tolerance decides
    assert reach([0.5 - 1e-13], 0.5, 0.0)[1]  # float slack of the feasibility test


def test_tune_marks_unreachable_budgets_in_every_table(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    save_torch(folder / "logits.pt", {s: dict(zip(("logits", "labels"), gap_logits(300, i)), extras={})
                                      for i, s in enumerate(("val", "test"))})
    write_json(folder / "metrics.json", {"run": {"dataset": "synthetic", "method": "joint", "seed": 0},
                                         "method": {"exit_policy": "max_softmax"},
                                         "exit_costs": {"flops": FLOPS, "unit": "FLOPs per sample"}})
    result = tune_run(folder, tmp_path / "out", {**PARAMS, "budgets": [0.3, 0.53], "trials": 30}, seed=0)
    rows = {(r["calibrator"], r["budget"]): r for r in result["budgets"]}
    for calibrator in ("optuna_per_exit", "exact_single"):
        low, high = rows[(calibrator, 0.3)], rows[(calibrator, 0.53)]
        assert low["feasible"] and not low["reached"] and low["reachable_cost"] == pytest.approx(0.2)
        assert low["val"]["flops_fraction"] == pytest.approx(0.2)  # the cheapest point, now flagged
        assert high["reached"] and high["reachable_cost"] == pytest.approx(0.52)
    points = pd.read_csv(tmp_path / "out" / "operating_points.csv")
    dense = points[points["calibrator"] == "exact_single"]
    inside_gap = (dense["budget"] > 0.2 + 0.02 + 1e-9) & (dense["budget"] < 0.52)
    assert inside_gap.any() and not dense.loc[inside_gap, "reached"].any()
    assert dense.loc[np.isclose(dense["budget"], 0.2) | np.isclose(dense["budget"], 1.0), "reached"].all()


def test_summary_budgets_carry_the_reach_flag_per_method_and_budget():
    from bench.analyse.aggregate import with_reach

    rows = pd.DataFrame([{"dataset": "d", "model": "net", "method": m, "budget": b, "seed": s, "reached": r}
                         for m, b, s, r in [("a", 0.3, 0, True), ("a", 0.3, 1, True), ("b", 0.3, 0, True),
                                            ("b", 0.3, 1, False), ("b", 0.5, 0, False), ("b", 0.5, 1, False)]])
    summary = pd.DataFrame([{"dataset": "d", "model": "net", "method": m, "budget": b, "metric": "test_accuracy", "mean": 0.5}
                            for m, b in [("a", 0.3), ("b", 0.3), ("b", 0.5)]])
    flagged = with_reach(summary, rows).set_index(["method", "budget"])
    assert flagged["reached"].to_dict() == {("a", 0.3): True, ("b", 0.3): False, ("b", 0.5): False}
    assert flagged["reached_seeds"].to_dict() == {("a", 0.3): 2, ("b", 0.3): 1, ("b", 0.5): 0}
    assert set(flagged["seeds"]) == {2}


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.1"])
def test_reach_tolerance_is_validated(real_params, value):
    import copy

    from bench.config import validate
    from bench.errors import BenchError

    params = copy.deepcopy(real_params)
    params["tune"]["reach_tolerance"] = value
    with pytest.raises(BenchError, match="tune.reach_tolerance"):
        validate(params)
    params["tune"]["reach_tolerance"] = 0.05
    assert validate(params)["tune"]["reach_tolerance"] == 0.05
