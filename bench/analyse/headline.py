"""Headline numbers per dataset × model × method (the CI regression watches these) and their comparison with
committed expectations.

Headline: deepest-exit test accuracy, and at the middle tuned budget the test accuracy, the expected
test FLOPs (fraction of the deepest exit's) and the early-exit accuracy; each as the mean over seeds,
with the seed-to-seed standard deviation the tolerances are derived from.
"""

from __future__ import annotations

import difflib
import math
import platform
from pathlib import Path

import pandas as pd

from bench.env import package_versions
from bench.errors import BenchError
from bench.io import read_json, write_json

TOLERANCE_RULE = ("tolerance = max(floor, seed-to-seed standard deviation of the number): a change smaller than "
                  "what another random seed does is not a regression. Floors: 0.003 for accuracies and 0.01 for "
                  "FLOPs fractions, for machine-to-machine differences (not measurable here: one machine type; "
                  "runs are bit-identical on one machine, see tests/test_engine.py).")
FLOORS = {"flops_fraction": 0.01}
DEFAULT_FLOOR = 0.003


def headline(per_exit: pd.DataFrame, tuned: pd.DataFrame) -> dict:
    middle = sorted(tuned["budget"].unique())[len(tuned["budget"].unique()) // 2] if len(tuned) else None
    deepest = per_exit[per_exit["exit"] == per_exit.groupby(["dataset", "model", "method"])["exit"].transform("max")]
    numbers: dict = {}  # dataset → model → method → number

    def add(dataset, model, method, name, values):
        values = pd.Series(values, dtype=float).dropna()
        numbers.setdefault(dataset, {}).setdefault(model, {}).setdefault(method, {})[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "seed_std": float(values.std(ddof=1)) if len(values) > 1 else None, "seeds": int(len(values))}

    for key, group in deepest.groupby(["dataset", "model", "method"]):
        add(*key, "deepest_exit_test_accuracy", group["test_accuracy"])
    if middle is not None:
        at = tuned[tuned["budget"] == middle]
        for key, group in at.groupby(["dataset", "model", "method"]):
            add(*key, "test_accuracy_at_middle_budget", group["test_accuracy"])
            add(*key, "test_flops_fraction_at_middle_budget", group["test_flops_fraction"])
            add(*key, "early_exit_accuracy_at_middle_budget", group["test_early_exit_accuracy"])
    return {"middle_budget": middle, "numbers": numbers}


def tolerance(name: str, seed_std: float | None) -> float:
    floor = next((v for key, v in FLOORS.items() if key in name), DEFAULT_FLOOR)
    return max(floor, seed_std or 0.0)


def flatten(numbers: dict) -> dict[tuple[str, str, str, str], dict]:
    """{(dataset, model, method, number): value} of a dataset → model → method → number nesting."""
    return {(d, model, m, n): v for d, models in numbers.items() for model, methods in models.items()
            for m, names in methods.items() for n, v in names.items()}


def compare(expected: dict, got: dict) -> pd.DataFrame:
    want, have = flatten(expected["numbers"]), flatten(got["numbers"])
    rows = []
    for key in sorted(set(want) | set(have)):
        e, g = want.get(key), have.get(key)
        row = {"dataset": key[0], "model": key[1], "method": key[2], "number": key[3],
               "expected": e["expected"] if e else None, "got": g["mean"] if g else None,
               "tolerance": e["tolerance"] if e else None}
        if e is None:
            row["status"] = "new (not checked)"
        elif g is None or g["mean"] is None or (isinstance(g["mean"], float) and math.isnan(g["mean"])):
            row["status"] = "MISSING"
        else:
            row["status"] = "ok" if abs(g["mean"] - e["expected"]) <= e["tolerance"] + 1e-12 else "REGRESSED"
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    def num(value):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    lines = [f"{'dataset':14s} {'model':20s} {'method':12s} {'number':38s} {'expected':>9s} {'got':>9s} {'tol':>7s}  status"]
    for r in table.itertuples():
        lines.append(f"{r.dataset:14s} {r.model:20s} {r.method:12s} {r.number:38s} {num(r.expected):>9s} {num(r.got):>9s} "
                     f"{num(r.tolerance):>7s}  {r.status}")
    return "\n".join(lines)


def load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise BenchError(f"{what} {path} not found; " + ("run `make regress` (or the aggregate stage) first"
                                                         if what == "headline" else "create it with `eebench bless`"))
    from bench.artefacts import regenerate

    return read_json(path, regenerate(path) if what == "headline" else
                     "restore it from git (`git checkout -- <file>`) or rewrite it with `eebench bless`")


def regress(headline_path: Path, expected_path: Path) -> tuple[bool, str]:
    table = compare(load(expected_path, "expectations"), load(headline_path, "headline"))
    failed = table["status"].isin(["REGRESSED", "MISSING"])
    summary = f"{int(failed.sum())} of {int((table['status'] != 'new (not checked)').sum())} numbers out of tolerance"
    return not failed.any(), format_table(table) + "\n" + summary


def bless(headline_path: Path, expected_path: Path, profile: str) -> str:
    """Rewrite the expectations from the current headline; return the diff to review."""
    got = load(headline_path, "headline")
    before = expected_path.read_text() if expected_path.is_file() else ""
    numbers: dict = {}
    for (d, model, m, n), v in flatten(got["numbers"]).items():
        if v["mean"] is not None:
            numbers.setdefault(d, {}).setdefault(model, {}).setdefault(m, {})[n] = {
                "expected": v["mean"], "tolerance": tolerance(n, v["seed_std"]), "seed_std": v["seed_std"],
                "seeds": v["seeds"]}
    expected = {"profile": profile, "middle_budget": got["middle_budget"], "tolerance_rule": TOLERANCE_RULE,
                "versions": {"python": platform.python_version(), **package_versions()}, "numbers": numbers}
    write_json(expected_path, expected)
    after = expected_path.read_text()
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), str(expected_path) + " (before)",
                                        str(expected_path) + " (after)")) or "no change"


