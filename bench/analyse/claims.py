"""The claims table: the published claims a study tests, read from a claims file (`analyse.claims` in
params.yaml, e.g. claims/cgt.yaml) fixed before the study was run. Each part of a claim is one comparison
paired by seed (a measure of this module's MEASURES); the table gives the mean difference with a 95 %
Student-t interval and a verdict from one rule:

- not supported: the interval lies entirely below the smallest value the claim states (or below zero);
- supported: the interval lies above zero and reaches the claimed range;
- inconclusive: anything else (including fewer than two paired seeds).
A claim made of several parts is supported only if every part is, and not supported if any part is not.
Parts marked `secondary` (e.g. HardCGT beside SoftCGT, the paper's headline variant) are reported beside
their claim but do not decide its verdict. Every claim is evaluated per dataset × model (a dataset studied
with two models gives two verdicts).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analyse.stats import t_interval
from bench.errors import BenchError
from bench.registry import Registry

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
        claimed_low: float, model: str = "", **extra) -> dict:
    if differences is None:
        return {"claim": claim, "dataset": dataset, "model": model, "part": part, "comparison": comparison, "stated": stated,
                "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "unit": unit,
                "verdict": "not run", **extra}
    mean, low, high = t_interval(differences.to_numpy())
    return {"claim": claim, "dataset": dataset, "model": model, "part": part, "comparison": comparison, "stated": stated,
            "mean": mean, "ci_low": low, "ci_high": high, "n": len(differences), "unit": unit,
            "verdict": verdict(low, high, claimed_low), **extra}


class Tables:
    """Per-seed series of one dataset × model read from the aggregated CSVs (missing method → None); model None:
    every model of the dataset (tables of a study with one model per dataset)."""

    def __init__(self, tables: dict[str, pd.DataFrame], dataset: str, model: str | None = None):
        self.t = {name: frame[(frame["dataset"] == dataset) & ((frame["model"] == model) if model is not None
                                                                else True)] for name, frame in tables.items()}
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




@dataclass
class Measured:
    """One measure on one dataset: paired differences per seed (None: a method was not run), the part's label,
    and extra columns (e.g. how many seeds were imputed)."""
    differences: pd.Series | None
    part: str
    extra: dict = field(default_factory=dict)


@dataclass
class Measure:
    compute: callable  # (tables, **arguments) -> Measured
    unit: str
    note: str = ""     # what the report says under a claim that uses this measure


MEASURES: Registry[Measure] = Registry("claim measure")


def measure(name: str, unit: str, note: str = ""):
    def add(fn):
        MEASURES.register(name)(Measure(fn, unit, note))
        return fn
    return add


@measure("cost_at_matched_accuracy", "%", note=(
    "Seeds not matched: seeds whose validation accuracy reaches the matched accuracy at no operating point; "
    "they are charged the whole network's cost (FLOPs fraction 1.0), so their values are imputed, not "
    "measured. A row with imputed seeds is marked so, and a row whose seeds are all imputed has no interval."))
def cost_at_matched_accuracy(t: Tables, method: str, baseline: str, accuracy_drop_pt: float) -> Measured:
    """Reduction 1 − cost/cost_baseline (%) of the test FLOPs at matched accuracy, per seed."""
    part = f"{method} vs {baseline}"
    if not t.has(method, baseline):
        return Measured(None, part, {"seeds_not_matched": math.nan})
    targets = t.deepest(baseline, "val") - accuracy_drop_pt / 100
    cost, missed = t.cost_at_accuracy(method, targets)
    base_cost, _ = t.cost_at_accuracy(baseline, targets)
    return Measured(100 * (1 - cost / base_cost).dropna(), part, {"seeds_not_matched": missed})


@measure("accuracy_at_budget", "pt")
def accuracy_at_budget(t: Tables, method: str, baseline: str, budget: float) -> Measured:
    """Test accuracy difference (points) at an expected-FLOPs budget, Optuna per-exit thresholds."""
    ok = t.has(method, baseline)
    return Measured(100 * paired(t.tuned(method, budget, "test_accuracy"), t.tuned(baseline, budget, "test_accuracy"))
                    if ok else None, f"{method} vs {baseline}")


@measure("early_heads_accuracy", "pt")
def early_heads_accuracy(t: Tables, method: str, baseline: str) -> Measured:
    """Difference (points) in the mean test accuracy of every exit but the last, on all samples."""
    ok = t.has(method, baseline)
    return Measured(100 * paired(t.early_heads(method), t.early_heads(baseline)) if ok else None,
                    f"{method} vs {baseline}")


@measure("deepest_accuracy_vs_best_other", "pt")
def deepest_accuracy_vs_best_other(t: Tables, method: str) -> Measured:
    """Deepest-exit test accuracy (points) against the other method with the highest mean."""
    if not t.has(method):
        return Measured(None, f"{method} vs best other (None)")
    means = {m: t.deepest(m).mean() for m in t.own_policy if m != method}
    best = max(means, key=means.get) if means else None
    return Measured(100 * paired(t.deepest(method), t.deepest(best)) if best else None,
                    f"{method} vs best other ({best})")


@measure("early_exit_share", "pt of samples")
def early_exit_share(t: Tables, method: str, baseline: str, threshold: float) -> Measured:
    """Difference (points of samples) in the share of test samples leaving before the last exit under
    max-softmax ≥ threshold."""
    ok = t.has(method, baseline)
    return Measured(100 * paired(t.early_fraction(method, threshold), t.early_fraction(baseline, threshold))
                    if ok else None, f"{method} vs {baseline}")


@measure("last_exit_effective_share", "pt of batch")
def last_exit_effective_share(t: Tables, method: str, baseline: str) -> Measured:
    """Difference (points of the batch) in the last exit's effective share of the batch carrying gradient."""
    ok = t.has(method, baseline)
    return Measured(100 * paired(t.last_exit_gradient(method, "effective_samples"),
                                 t.last_exit_gradient(baseline, "effective_samples")) if ok else None,
                    f"{method} vs {baseline}")


@measure("last_exit_grad_norm_reduction", "%")
def last_exit_grad_norm_reduction(t: Tables, method: str, baseline: str) -> Measured:
    """1 − baseline/method (%) of the last exit's backbone-gradient norm, mean over logged steps."""
    ok = t.has(method, baseline)
    return Measured(100 * (1 - t.last_exit_gradient(baseline, "backbone_grad_norm")
                           / t.last_exit_gradient(method, "backbone_grad_norm")).dropna() if ok else None,
                    f"{method} vs {baseline}")


@measure("policy_vs_max_softmax_at_budget", "pt")
def policy_vs_max_softmax_at_budget(t: Tables, method: str, metric: str, budget: float) -> Measured:
    """The method's own exit policy against max-softmax thresholds on the same trained network, exact
    single-threshold optimum on validation for both: test accuracy gain, or ECE reduction (points)."""
    policy = t.own_policy.get(method)
    part = f"{method}: {policy} vs max_softmax"
    if not t.has(method):
        return Measured(None, part)
    sign = -1 if metric == "test_ece" else 1
    return Measured(sign * 100 * paired(t.at_budget(method, policy, budget, metric),
                                        t.at_budget(method, "max_softmax", budget, metric)), part)


POLICY_METRICS = ("test_accuracy", "test_ece")
PART_KEYS = {"measure", "comparison", "stated", "claimed_low", "secondary"}


def arguments(part: dict) -> dict:
    return {k: v for k, v in part.items() if k not in PART_KEYS}


def load_claims(path: str | Path) -> dict:
    """Read and check a claims file; every problem is a one-line BenchError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"claims file {path} not found (analyse.claims); give the path of a claims file such as "
                         f"claims/cgt.yaml, or null for a study without claims")
    from bench.config import read_yaml

    spec = read_yaml(path)  # malformed YAML (or not UTF-8): one line naming the file and the position

    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise BenchError(f"{path}: {where} {what}")

    need(isinstance(spec, dict) and isinstance(spec.get("claims"), list) and spec["claims"], "the file",
         "must be a mapping with a non-empty `claims:` list (and a `source:`)")
    unknown = set(spec) - {"source", "claims"}
    need(not unknown, f"top-level key(s) {sorted(unknown)}", "are unknown; valid keys: claims, source")
    ids = []
    for i, claim in enumerate(spec["claims"]):
        where = f"claims[{i}]"
        need(isinstance(claim, dict), where, "must be a mapping with id, text, parts (and optionally source)")
        unknown = set(claim) - {"id", "text", "source", "parts"}
        need(not unknown, f"{where} key(s) {sorted(unknown)}", "are unknown; valid keys: id, parts, source, text")
        for key in ("id", "text"):
            need(isinstance(claim.get(key), str) and claim[key], f"{where}.{key}", "must be a non-empty string")
        need(isinstance(claim.get("source", spec.get("source")), str), f"{where}.source",
             "is missing: give a `source:` for the claim or for the file")
        need(claim["id"] not in ids, f"{where}.id", f"{claim['id']!r} is used twice; give each claim its own id")
        ids.append(claim["id"])
        need(isinstance(claim.get("parts"), list) and claim["parts"], f"{where}.parts", "must be a non-empty list")
        for j, part in enumerate(claim["parts"]):
            at = f"{where}.parts[{j}]"
            need(isinstance(part, dict), at, "must be a mapping")
            name = part.get("measure")
            need(isinstance(name, str) and name in MEASURES, f"{at}.measure",
                 f"= {name!r} is not a measure; valid choices: {', '.join(MEASURES.names())}")
            for key in ("comparison", "stated"):
                need(isinstance(part.get(key), str), f"{at}.{key}", "must be a string")
            low = part.get("claimed_low")
            need(isinstance(low, (int, float)) and not isinstance(low, bool), f"{at}.claimed_low",
                 "must be a number (the smallest value the claim states, in the measure's unit)")
            need(isinstance(part.get("secondary", False), bool), f"{at}.secondary", "must be true or false")
            signature = inspect.signature(MEASURES.get(name).compute).parameters
            wanted = [p for p in signature if p != "t"]
            given = arguments(part)
            need(set(given) == set(wanted), at, f"gives {sorted(given)} to measure {name}; it takes exactly {wanted}")
            for key, value in given.items():
                if key in ("method", "baseline"):
                    need(isinstance(value, str), f"{at}.{key}", "must be a method name")
                elif key == "metric":
                    need(value in POLICY_METRICS, f"{at}.metric", f"must be one of {', '.join(POLICY_METRICS)}")
                else:
                    need(isinstance(value, (int, float)) and not isinstance(value, bool), f"{at}.{key}", "must be a number")
            if "budget" in given:
                need(0 < given["budget"] <= 1, f"{at}.budget", "must be a fraction in (0, 1]")
            try:
                describe(part)
            except (KeyError, IndexError, ValueError) as exc:
                raise BenchError(f"{path}: {at}.comparison names {exc} which is not an argument of the part; "
                                 f"use one of {{{'}, {'.join(given)}}}") from None
    return spec


def claim_methods(spec: dict | None) -> list[str]:
    """Every method a claims file names (in order of appearance)."""
    names = []
    for claim in (spec or {}).get("claims", []):
        for part in claim["parts"]:
            for key in ("method", "baseline"):
                if key in part and part[key] not in names:
                    names.append(part[key])
    return names


def describe(part: dict) -> str:
    """The part's comparison text with its arguments filled in (numbers as %g)."""
    values = {k: format(v, "g") if isinstance(v, float) else v for k, v in arguments(part).items()}
    return " ".join(part["comparison"].split()).format(**values)


def claims_table(tables: dict[str, pd.DataFrame], spec: dict) -> pd.DataFrame:
    """One row per (dataset, model, claim part), in the file's order; `spec` is a loaded claims file. Tables
    without a `model` column (bench/analyse/tables.py adds it) count as one unnamed model per dataset."""
    from bench.analyse.tables import with_model

    tables = {name: with_model(frame, None) for name, frame in tables.items()}
    rows = []
    settings = tables["runs"][["dataset", "model"]].drop_duplicates().sort_values(["dataset", "model"])
    for dataset, model in settings.itertuples(index=False):
        t = Tables(tables, dataset, model)
        for claim in spec["claims"]:
            for part in claim["parts"]:
                chosen = MEASURES.get(part["measure"])
                result = chosen.compute(t, **arguments(part))
                rows.append(row(claim["id"], dataset, result.part, describe(part), part["stated"], result.differences,
                                chosen.unit, part["claimed_low"], model, **result.extra,
                                primary=not part.get("secondary", False)))
    table = pd.DataFrame(rows)
    columns = ["claim", "dataset", "model", "part", "comparison", "stated", "mean", "ci_low", "ci_high", "n", "unit",
               "verdict"]
    table = table[columns + [c for c in table.columns if c not in columns + ["primary"]] + ["primary"]]
    verdicts = table[table["primary"]].groupby(["claim", "dataset", "model"])["verdict"].agg(lambda v: combine(list(v)))
    table["claim_verdict"] = [verdicts[key] for key in zip(table["claim"], table["dataset"], table["model"])]
    return table
