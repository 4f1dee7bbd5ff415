"""The claims table: each published claim tested by a comparison fixed in params.yaml (`analyse.claims`)
before the study was run. Every comparison is paired by seed; the table gives the mean difference with a
95 % Student-t interval and a verdict from one rule:

- not supported: the interval lies entirely below the smallest value the claim states (or below zero);
- supported: the interval lies above zero and reaches the claimed range;
- inconclusive: anything else (including fewer than two paired seeds).
A claim made of several parts is supported only if every part is, and not supported if any part is not.
Claims 1–3 name "CGT": the first of `cgt_methods` (SoftCGT, the paper's headline variant) decides the
verdict; the others are reported beside it as secondary rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analyse.stats import t_interval

SOURCE = "newx.sg / arxivlens AI summaries of arXiv 2509.17885 (unverified secondary sources)"


def verdict(low: float, high: float, claimed_low: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if high < claimed_low or high <= 0:
        return "not supported"
    if low > 0:
        return "supported"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    if "not run" in verdicts:
        return "not run"
    if "not supported" in verdicts:
        return "not supported"
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"


def paired(a: pd.Series, b: pd.Series) -> pd.Series:
    """a − b on the seeds both have (each indexed by seed)."""
    common = a.index.intersection(b.index)
    return (a.loc[common] - b.loc[common]).dropna()


def row(claim: str, dataset: str, part: str, comparison: str, stated: str, differences: pd.Series, unit: str,
        claimed_low: float, **extra) -> dict:
    if differences is None:
        return {"claim": claim, "dataset": dataset, "part": part, "comparison": comparison, "stated": stated,
                "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "unit": unit,
                "verdict": "not run", **extra}
    mean, low, high = t_interval(differences.to_numpy())
    return {"claim": claim, "dataset": dataset, "part": part, "comparison": comparison, "stated": stated,
            "mean": mean, "ci_low": low, "ci_high": high, "n": len(differences), "unit": unit,
            "verdict": verdict(low, high, claimed_low), **extra}


class Tables:
    """Per-seed series read from the aggregated CSVs (missing method → None)."""

    def __init__(self, tables: dict[str, pd.DataFrame], dataset: str):
        self.t = {name: frame[frame["dataset"] == dataset] for name, frame in tables.items()}
        self.own_policy = self.t["runs"].groupby("method")["exit_policy"].first().to_dict()

    def has(self, *methods: str) -> bool:
        return all(m in self.own_policy for m in methods)

    def deepest(self, method: str, split: str = "test") -> pd.Series:
        frame = self.t["per_exit"][self.t["per_exit"]["method"] == method]
        last = frame[frame["exit"] == frame["exit"].max()]
        return last.set_index("seed")[f"{split}_accuracy"]

    def early_heads(self, method: str) -> pd.Series:
        frame = self.t["per_exit"][self.t["per_exit"]["method"] == method]
        return frame[frame["exit"] < frame["exit"].max()].groupby("seed")["test_accuracy"].mean()

    def tuned(self, method: str, budget: float, metric: str) -> pd.Series:
        frame = self.t["budgets"]
        frame = frame[(frame["method"] == method) & (frame["calibrator"] == "optuna_per_exit") & frame["feasible"]
                      & np.isclose(frame["budget"], budget)]
        return frame.set_index("seed")[metric]

    def operating_points(self, method: str, policy: str | None = None) -> pd.DataFrame:
        frame = self.t["operating_points"]
        return frame[(frame["method"] == method) & (frame["policy"] == (policy or self.own_policy[method]))
                     & (frame["calibrator"] == "exact_single")]

    def at_budget(self, method: str, policy: str, budget: float, metric: str) -> pd.Series:
        frame = self.operating_points(method, policy)
        return frame[np.isclose(frame["budget"], budget)].set_index("seed")[metric]

    def cost_at_accuracy(self, method: str, targets: pd.Series) -> tuple[pd.Series, int]:
        """Per seed: test FLOPs fraction of the cheapest operating point whose *validation* accuracy reaches
        the seed's target; 1.0 (the whole network) where none does. Also how many seeds reached none."""
        frame = self.operating_points(method)
        costs, missed = {}, 0
        for seed, target in targets.items():
            ok = frame[(frame["seed"] == seed) & (frame["val_accuracy"] >= target)]
            if ok.empty:
                missed += int((frame["seed"] == seed).any())
                costs[seed] = 1.0 if (frame["seed"] == seed).any() else math.nan
            else:
                costs[seed] = ok.loc[ok["val_flops_fraction"].idxmin(), "test_flops_fraction"]
        return pd.Series(costs).dropna(), missed

    def early_fraction(self, method: str, threshold: float) -> pd.Series:
        frame = self.t["threshold_curves"]
        frame = frame[(frame["method"] == method) & (frame["policy"] == "max_softmax") & (frame["split"] == "test")
                      & np.isclose(frame["threshold"], threshold)]
        return frame.set_index("seed")["early_exit_fraction"]

    def last_exit_gradient(self, method: str, column: str) -> pd.Series:
        frame = self.t["grad_stats"]
        frame = frame[frame["method"] == method]
        frame = frame[frame["exit"] == frame["exit"].max()]
        values = frame[column] / frame["batch_size"] if column == "effective_samples" else frame[column]
        return values.groupby(frame["seed"]).mean()


def claims_table(tables: dict[str, pd.DataFrame], spec: dict) -> pd.DataFrame:
    """One row per (claim part, dataset); `spec` is params.yaml's analyse.claims."""
    rows = []
    base, budget, tau = spec["baseline"], spec["budget"], spec["routing_threshold"]
    for dataset in sorted(tables["runs"]["dataset"].unique()):
        t = Tables(tables, dataset)
        for cgt in spec["cgt_methods"]:
            ok, primary = t.has(cgt, base), cgt == spec["cgt_methods"][0]
            targets = t.deepest(base, "val") - spec["matched_accuracy_drop"] if ok else None
            if ok:
                cgt_cost, missed = t.cost_at_accuracy(cgt, targets)
                base_cost, _ = t.cost_at_accuracy(base, targets)
                reduction = 100 * (1 - cgt_cost / base_cost).dropna()
            rows.append(row("1", dataset, f"{cgt} vs {base}",
                            f"test FLOPs at matched accuracy: cheapest dense-sweep operating point whose validation "
                            f"accuracy ≥ {base}'s deepest-exit validation accuracy − {100 * spec['matched_accuracy_drop']:g} pt; "
                            f"reduction 1 − cost/cost_{base}", "up to 42 %", reduction if ok else None, "%", 0.0,
                            seeds_not_matched=missed if ok else math.nan, primary=primary))
            rows.append(row("2", dataset, f"{cgt} vs {base}",
                            f"test accuracy at budget {budget:g} (Optuna per-exit thresholds tuned on validation, "
                            f"each method's own exit policy)", "+0.8 – 1.3 pt",
                            100 * paired(t.tuned(cgt, budget, "test_accuracy"), t.tuned(base, budget, "test_accuracy"))
                            if ok else None, "pt", 0.8, primary=primary))
            rows.append(row("3", dataset, f"{cgt} vs {base}",
                            "mean test accuracy of the early exits' heads (every exit but the last, on all samples)",
                            "+3.1 – 5.7 pt", 100 * paired(t.early_heads(cgt), t.early_heads(base)) if ok else None,
                            "pt", 3.1, primary=primary))
        soft, hard = "soft_cgt", "hard_cgt"
        if t.has(soft):
            others = [m for m in t.own_policy if m != soft]
            means = {m: t.deepest(m).mean() for m in others}
            best = max(means, key=means.get) if means else None
            rows.append(row("4", dataset, f"{soft} vs best other ({best})",
                            "deepest-exit test accuracy against the method with the highest mean", "best accuracy",
                            100 * paired(t.deepest(soft), t.deepest(best)) if best else None, "pt", 0.0))
        for joint in spec["joint_baselines"]:
            rows.append(row("4", dataset, f"{soft} vs {joint}",
                            f"share of test samples leaving before the last exit, max-softmax ≥ {tau:g}",
                            "more early exits", 100 * paired(t.early_fraction(soft, tau), t.early_fraction(joint, tau))
                            if t.has(soft, joint) else None, "pt of samples", 0.0))
        both = t.has(soft, hard)
        rows.append(row("5", dataset, f"{hard} vs {soft}", f"share of test samples leaving before the last exit, "
                        f"max-softmax ≥ {tau:g}", "more early exits than SoftCGT",
                        100 * paired(t.early_fraction(hard, tau), t.early_fraction(soft, tau)) if both else None,
                        "pt of samples", 0.0))
        rows.append(row("5", dataset, f"{soft} vs {hard}", "last exit's effective share of the batch carrying "
                        "gradient, (Σw)²/Σw² / batch, mean over logged steps (SoftCGT − HardCGT)", "HardCGT starves deep exits",
                        100 * paired(t.last_exit_gradient(soft, "effective_samples"),
                                     t.last_exit_gradient(hard, "effective_samples")) if both else None, "pt of batch", 0.0))
        rows.append(row("5", dataset, f"{soft} vs {hard}", "last exit's backbone-gradient norm, mean over logged "
                        "steps: reduction 1 − HardCGT/SoftCGT", "HardCGT starves deep exits",
                        100 * (1 - t.last_exit_gradient(hard, "backbone_grad_norm")
                               / t.last_exit_gradient(soft, "backbone_grad_norm")).dropna() if both else None, "%", 0.0))
        gate = spec["gate_method"]
        has_gate = t.has(gate)
        policy = t.own_policy.get(gate)
        for metric, sign, label, unit in (("test_accuracy", 1, "test accuracy", "pt"),
                                          ("test_ece", -1, "ECE of the returned predictions (max-softmax − gate)", "pt")):
            rows.append(row("6", dataset, f"{gate}: {policy} vs max_softmax",
                            f"{label} at budget {budget:g}, same trained network, exact single-threshold "
                            f"optimum on validation for both policies", "better trade-off and calibration",
                            sign * 100 * paired(t.at_budget(gate, policy, budget, metric),
                                                t.at_budget(gate, "max_softmax", budget, metric)) if has_gate else None,
                            unit, 0.0))
    table = pd.DataFrame(rows)
    table["primary"] = table["primary"].fillna(True).astype(bool)
    verdicts = table[table["primary"]].groupby(["claim", "dataset"])["verdict"].agg(lambda v: combine(list(v)))
    table["claim_verdict"] = [verdicts[(c, d)] for c, d in zip(table["claim"], table["dataset"])]
    return table
