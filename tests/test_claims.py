"""The claims table: the verdict rule, the claims file (data, checked before anything runs), and each
comparison computed from hand-made aggregated tables whose answer is known."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.analyse.claims import Tables, claim_methods, claims_table, combine, load_claims, verdict
from bench.errors import BenchError
from tests.conftest import ROOT

CGT = ROOT / "claims" / "cgt.yaml"

SEEDS = [0, 1, 2, 3, 4]
POLICY = {"branchynet": "entropy", "joint": "max_softmax", "soft_cgt": "max_softmax", "hard_cgt": "max_softmax",
          "jei_dnn": "learned_gate"}


def t_ci(values):
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean() - half, values.mean() + half


@pytest.mark.parametrize("low, high, claimed, expected", [
    (0.5, 2.0, 0.8, "supported"),       # above zero, reaches the claimed range
    (0.1, 0.6, 0.8, "not supported"),   # real but smaller than claimed
    (-1.0, -0.2, 0.0, "not supported"),  # reversed
    (-0.5, 1.0, 0.8, "inconclusive"),   # straddles zero
    (math.nan, math.nan, 0.0, "inconclusive"),
])
def test_verdict_rule(low, high, claimed, expected):
    assert verdict(low, high, claimed) == expected


def test_combining_parts():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "not supported"]) == "not supported"


def synthetic_tables(early_gain, final_gain, budget_gain):
    """Per seed: soft_cgt's early heads beat branchynet's by early_gain[s], its deepest exit by final_gain[s],
    its accuracy at budget 0.5 by budget_gain[s] (fractions)."""
    runs, per_exit, budgets, points, curves, grads = [], [], [], [], [], []
    for method, policy in POLICY.items():
        for s in SEEDS:
            key = {"dataset": "d", "method": method, "seed": s}
            runs.append({**key, "exit_policy": policy})
            soft = method == "soft_cgt"
            for k in range(3):
                acc = 0.7 + 0.1 * k + (early_gain[s] if soft and k < 2 else 0) + (final_gain[s] if soft and k == 2 else 0)
                per_exit.append({**key, "exit": k, "test_accuracy": acc, "val_accuracy": acc})
            budgets.append({**key, "calibrator": "optuna_per_exit", "feasible": True, "budget": 0.5,
                            "test_accuracy": 0.8 + (budget_gain[s] if soft else 0)})
            for p in {policy, "max_softmax"}:
                for b in np.linspace(0, 1, 11)[1:]:
                    gate = method == "jei_dnn" and p == "learned_gate"
                    points.append({**key, "policy": p, "calibrator": "exact_single", "budget": b,
                                   "val_accuracy": 0.8 + 0.1 * b, "val_flops_fraction": b, "test_flops_fraction": b,
                                   "test_accuracy": 0.8 + 0.1 * b + (0.01 if gate else 0),
                                   "test_ece": 0.05 - (0.02 if gate else 0)})
            curves.append({**key, "policy": "max_softmax", "split": "test", "threshold": 0.9,
                           "early_exit_fraction": {"hard_cgt": 0.7, "soft_cgt": 0.5}.get(method, 0.4) + 0.01 * s})
            for step in range(3):
                grads.append({**key, "exit": 2, "step": step, "batch_size": 100,
                              "effective_samples": 10.0 if method == "hard_cgt" else 40.0,
                              "backbone_grad_norm": 0.1 if method == "hard_cgt" else 0.5})
    return {name: pd.DataFrame(rows) for name, rows in (("runs", runs), ("per_exit", per_exit), ("budgets", budgets),
                                                         ("operating_points", points), ("threshold_curves", curves),
                                                         ("grad_stats", grads))}


def test_claims_table_on_known_differences():
    early, final, budget = [0.03, 0.04, 0.05, 0.04, 0.04], [0.01, 0.02, 0.0, 0.01, 0.01], [0.001, 0.002, 0.0, 0.001, 0.002]
    table = claims_table(synthetic_tables(early, final, budget), load_claims(CGT)).set_index(["claim", "part"])

    claim3 = table.loc[("3", "soft_cgt vs branchynet")]
    assert claim3["mean"] == pytest.approx(100 * np.mean(early))
    assert (claim3["ci_low"], claim3["ci_high"]) == pytest.approx(t_ci(100 * np.array(early)))
    assert claim3["n"] == 5 and claim3["verdict"] == "supported" and claim3["claim_verdict"] == "supported"
    assert table.loc[("3", "hard_cgt vs branchynet"), "primary"] == False  # noqa: E712 (numpy bool)

    claim2 = table.loc[("2", "soft_cgt vs branchynet")]
    assert claim2["mean"] == pytest.approx(100 * np.mean(budget))
    assert claim2["verdict"] == "not supported"  # real but far below the stated 0.8 points

    # identical operating points: no cost reduction at matched accuracy, and every seed matched
    claim1 = table.loc[("1", "soft_cgt vs branchynet")]
    assert claim1["mean"] == pytest.approx(0.0) and claim1["seeds_not_matched"] == 0

    assert table.loc[("4", "soft_cgt vs best other (branchynet)"), "mean"] == pytest.approx(100 * np.mean(final))
    assert table.loc[("4", "soft_cgt vs joint"), "mean"] == pytest.approx(10.0)
    assert table.loc[("5", "hard_cgt vs soft_cgt"), "mean"] == pytest.approx(20.0)
    starvation = table.loc[("5", "soft_cgt vs hard_cgt")]
    assert sorted(starvation["mean"]) == pytest.approx([30.0, 80.0])  # effective share 0.4 vs 0.1; norm 1 − 0.1/0.5
    gates = table.loc[("6", "jei_dnn: learned_gate vs max_softmax")]
    assert sorted(gates["mean"]) == pytest.approx([1.0, 2.0])  # +1 pt accuracy, −2 pt ECE
    assert (gates["n"] == 5).all()


def test_cost_at_matched_accuracy_is_the_cheapest_validation_point():
    rng = np.random.default_rng(0)
    rows = [{"dataset": "d", "method": "soft_cgt", "seed": s, "policy": "max_softmax", "calibrator": "exact_single",
             "budget": b, "val_accuracy": rng.uniform(0.7, 0.9), "val_flops_fraction": rng.uniform(0, 1),
             "test_flops_fraction": rng.uniform(0, 1)} for s in (0, 1) for b in range(30)]
    tables = {"runs": pd.DataFrame([{"dataset": "d", "method": "soft_cgt", "seed": 0, "exit_policy": "max_softmax"}]),
              "operating_points": pd.DataFrame(rows)}
    targets = pd.Series({0: 0.85, 1: 0.95})
    costs, missed = Tables(tables, "d").cost_at_accuracy("soft_cgt", targets)
    frame = pd.DataFrame(rows)
    reach = frame[(frame["seed"] == 0) & (frame["val_accuracy"] >= 0.85)].sort_values("val_flops_fraction")
    assert costs[0] == reach.iloc[0]["test_flops_fraction"]
    assert costs[1] == 1.0 and missed == 1  # nothing reaches 0.95: the whole network's cost, counted as missed


def test_the_cgt_file_names_the_default_study_methods_and_its_comparisons():
    spec = load_claims(CGT)
    assert [c["id"] for c in spec["claims"]] == ["1", "2", "3", "4", "5", "6"]
    assert claim_methods(spec) == ["soft_cgt", "branchynet", "hard_cgt", "joint", "jei_dnn"]
    first = spec["claims"][0]["parts"]
    assert [p.get("secondary", False) for p in first] == [False, True]  # SoftCGT decides, HardCGT is reported


def write(tmp_path, text):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    return path


ONE_CLAIM = """
source: a test
claims:
  - id: A
    text: soft_cgt's early heads beat branchynet's by at least 2 points
    parts:
      - measure: early_heads_accuracy
        method: soft_cgt
        baseline: branchynet
        comparison: early heads, {method} − {baseline}
        stated: "+2 pt"
        claimed_low: 2.0
"""


def test_a_study_tests_the_claims_of_its_own_file(tmp_path):
    early = [0.03, 0.04, 0.05, 0.04, 0.04]
    table = claims_table(synthetic_tables(early, [0.0] * 5, [0.0] * 5), load_claims(write(tmp_path, ONE_CLAIM)))
    assert len(table) == 1 and table["claim"].tolist() == ["A"]
    row = table.iloc[0]
    assert row["comparison"] == "early heads, soft_cgt − branchynet" and row["stated"] == "+2 pt"
    assert row["mean"] == pytest.approx(100 * np.mean(early))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_ci(100 * np.array(early)))
    assert row["verdict"] == row["claim_verdict"] == "supported"  # interval above 0 and reaching 2 points
    assert "seeds_not_matched" not in table.columns


@pytest.mark.parametrize("change, message", [
    (("measure: early_heads_accuracy", "measure: early_head"), "is not a measure; valid choices"),
    (("        baseline: branchynet\n", ""), "it takes exactly ['method', 'baseline']"),
    (("{baseline}", "{budget}"), "comparison names 'budget'"),
    (("claimed_low: 2.0", "claimed_low: two"), "claimed_low must be a number"),
    (("source: a test\n", ""), "source is missing"),
    (("    text:", "    txt:"), "['txt'] are unknown"),
])
def test_a_bad_claims_file_is_one_line_naming_the_file_and_key(tmp_path, change, message):
    path = write(tmp_path, ONE_CLAIM.replace(*change))
    with pytest.raises(BenchError) as error:
        load_claims(path)
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_claims_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(BenchError, match="not found.*or null for a study without claims"):
        load_claims(tmp_path / "none.yaml")


def test_params_name_a_claims_file_or_none(real_params, tmp_path):
    import copy

    from bench.config import validate

    params = copy.deepcopy(real_params)
    assert validate(params)["analyse"]["claims"] == "claims/cgt.yaml"
    params["analyse"]["claims"] = None
    assert validate(params)["analyse"]["claims"] is None
    params["analyse"]["claims"] = str(write(tmp_path, ONE_CLAIM.replace("method: soft_cgt", "method: soft_cg")))
    with pytest.raises(BenchError, match="soft_cg"):  # every method a claims file names must exist
        validate(params)
    params["analyse"]["claims"] = 3
    with pytest.raises(BenchError, match="analyse.claims"):
        validate(params)
