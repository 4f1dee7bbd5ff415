"""results/REPORT.md, generated from the aggregated tables (and params.yaml for the settings); every section is
per dataset × model (bench/analyse/tables.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.analyse.tables import label, read_table, with_model
from bench.io import write_csv, write_text


def fmt_ci(mean: float, low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(low):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def cell(value) -> bool:
    """True for a missing value (rendered "–", never "nan")."""
    return not isinstance(value, str) and pd.isna(value)


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join("–" if cell(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def headline(dataset: str, model: str, exits: pd.DataFrame, budgets: pd.DataFrame,
             unreached: dict | None = None) -> pd.DataFrame:
    """Per method: deepest-exit accuracy and, per tuned budget, accuracy, cost and early-exit accuracy; a budget
    that the method's exit policy cannot reach on some seeds is marked † k/n in its accuracy cell."""
    unreached = unreached or {}
    deepest = exits[(exits["metric"] == "test_accuracy") & (exits["exit"] == exits["exit"].max())].set_index("method")
    rows = []
    for method in sorted(deepest.index):
        row = {"method": method, "deepest exit acc. (%)": fmt_ci(*deepest.loc[method, ["mean", "ci_low", "ci_high"]])}
        part = budgets[budgets["method"] == method]
        for budget in sorted(part["budget"].unique()):
            at = part[part["budget"] == budget].set_index("metric")
            for metric, name, scale in (("test_accuracy", "acc. (%)", 100), ("test_flops_fraction", "FLOPs (% of deepest)", 100),
                                         ("test_early_exit_accuracy", "early-exit acc. (%)", 100)):
                if metric in at.index:
                    row[f"@{budget:g}: {name}"] = fmt_ci(*at.loc[metric, ["mean", "ci_low", "ci_high"]], scale=scale,
                                                          digits=1 if "FLOPs" in name else 2)
            missed = unreached.get((dataset, model, method, budget))
            if missed and f"@{budget:g}: acc. (%)" in row:
                row[f"@{budget:g}: acc. (%)"] += f" † {missed[0]}/{missed[1]}"
        rows.append(row)
    return pd.DataFrame(rows)


def values(runs: pd.DataFrame, column: str) -> str:
    """The environment the runs recorded in `column`: its one value, or each value with its number of runs (a study
    resumed at another commit, or trained on several devices, says so instead of showing its first run's)."""
    counts = runs[column].astype(str).value_counts(sort=False)
    if len(counts) == 1:
        return counts.index[0]
    return " / ".join(f"{value} ({n} run{'s' if n != 1 else ''})" for value, n in sorted(counts.items()))


def compute_section(runs: pd.DataFrame) -> list[str]:
    """One table of compute: a row per method, its runs and mean training time per run on each dataset × model."""
    runs = runs.assign(train_seconds=runs["seconds_per_epoch"] * runs["epochs"],
                       setting=[label(d, m) for d, m in zip(runs["dataset"], runs["model"])])
    per = runs.groupby(["method", "setting"]).agg(runs=("seed", "size"), seconds=("train_seconds", "mean"),
                                                  epochs=("epochs", "first"))
    table = pd.DataFrame(index=sorted(runs["method"].unique()))
    for dataset in sorted(runs["setting"].unique()):
        part = per.xs(dataset, level="setting")
        table[f"{dataset}: runs × epochs"] = [f"{part.loc[m, 'runs']} × {part.loc[m, 'epochs']}" if m in part.index
                                              else "–" for m in table.index]
        table[f"{dataset}: s per run"] = [f"{part.loc[m, 'seconds']:.1f}" if m in part.index else "–" for m in table.index]
    table["total training (min)"] = (runs.groupby("method")["train_seconds"].sum() / 60).round(1).astype(str)
    totals = runs.groupby("setting")["train_seconds"].sum()
    return ["## Compute", "",
            f"Training time per run, mean over seeds ({runs['threads'].iloc[0]} threads, {runs['device'].iloc[0]}; "
            "the evaluate and tune stages add a few seconds per run). Total training time: "
            + ", ".join(f"{d} {s / 60:.1f} min" for d, s in totals.items()) + ".", "",
            markdown(table.rename_axis("method").reset_index()), ""]


CLAIM_COLUMNS = ["claim", "dataset", "model", "part", "comparison", "stated", "mean", "ci_low", "ci_high", "n", "unit",
                 "verdict", "primary", "claim_verdict"]


def measured(row) -> str:
    """Mean [95 % interval] unit; values imputed for seeds that never matched are marked, and an interval over
    imputed values only is not shown."""
    if pd.isna(row["mean"]):
        return "–"
    imputed = row.get("seeds_not_matched")
    imputed = 0 if imputed is None or pd.isna(imputed) else int(imputed)
    if imputed and imputed >= row["n"]:
        return f"{row['mean']:+.2f} {row['unit']} (all {row['n']} seeds imputed: no interval)"
    text = f"{row['mean']:+.2f}" if pd.isna(row["ci_low"]) else f"{row['mean']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return f"{text} {row['unit']}" + (f" ({imputed} of {row['n']} seeds imputed)" if imputed else "")


def short(comparison: str) -> str:
    """The comparison's first clause (for the discussion)."""
    cut = min([i for i in (comparison.find(c) for c in (":", "(", ",")) if i > 0] or [len(comparison)])
    return comparison[:cut].strip()


def listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict_summary(table: pd.DataFrame, claims: list[dict]) -> list[str]:
    """The claim × (dataset × model) verdict table, generated from the claims table."""
    table = with_model(table, None)
    table = table.assign(dataset=[label(d, m) for d, m in zip(table["dataset"], table["model"])])
    datasets = sorted(table["dataset"].unique())
    verdicts = table.groupby(["claim", "dataset"])["claim_verdict"].first()
    rows = [{"claim": c["id"], "as stated": " ".join(c["text"].split()),
             **{d: verdicts.get((c["id"], d), "–") for d in datasets}} for c in claims]
    return ["### Summary of verdicts", "", markdown(pd.DataFrame(rows)), ""]


def discussion(table: pd.DataFrame, claims: list[dict]) -> list[str]:
    """A short discussion generated from the verdicts: counts, then per claim what decided each verdict (each
    dataset × model is named `dataset · model`)."""
    table = with_model(table, None)
    table = table.assign(dataset=[label(d, m) for d, m in zip(table["dataset"], table["model"])])
    verdicts = table.groupby(["claim", "dataset"])["claim_verdict"].first()
    counts = verdicts.value_counts()
    lines = ["## Discussion (generated from the verdicts)", "",
             f"{len(claims)} claims tested on {table['dataset'].nunique()} dataset × model settings, "
             f"{len(verdicts)} verdicts: "
             + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("supported", "not supported", "inconclusive", "not run"))
             + ".", ""]
    for claim in claims:
        part = table[table["claim"] == claim["id"]]
        by_verdict: dict[str, list[str]] = {}
        for dataset, verdict in verdicts[claim["id"]].items():
            by_verdict.setdefault(verdict, []).append(dataset)
        text = "; ".join(f"{v} on {listing(ds)}" for v, ds in by_verdict.items())
        details = []
        primary = part[part["primary"]]
        if primary["part"].nunique() > 1 or primary["comparison"].nunique() > 1:
            for dataset, group in primary.groupby("dataset"):
                kinds = {}
                for _, r in group.iterrows():
                    kinds.setdefault(r["verdict"], []).append(f"{short(r['comparison'])} ({r['part']})")
                details.append(f"on {dataset}: " + "; ".join(f"{v}: {listing(x)}" for v, x in kinds.items()))
        secondary = part[~part["primary"]]
        for part_name, group in secondary.groupby("part", sort=False):
            details.append(f"secondary {part_name} (does not decide): "
                           + ", ".join(f"{r['verdict']} on {r['dataset']}" for _, r in group.iterrows()))
        lines.append(f"- **Claim {claim['id']}** ({' '.join(claim['text'].split())}): {text}."
                     + "".join(f" {d[0].upper()}{d[1:]}." for d in details))
    return lines + [""]


def claims_section(results: Path, claims_file: str | None, params: dict | None = None) -> list[str]:
    """The claims table (also written to results/claims.csv) with its pre-registered rule, a summary of the
    verdicts and a discussion generated from them; nothing (and an empty claims.csv) without claims."""
    from bench.analyse.claims import MEASURES, __doc__ as rule, claims_table, load_claims

    if not claims_file:
        write_csv(results / "claims.csv", pd.DataFrame(columns=CLAIM_COLUMNS))
        return []
    spec = load_claims(claims_file)
    names = ("runs", "per_exit", "budgets", "operating_points", "threshold_curves", "grad_stats")
    missing = [f"results/{name}.csv" for name in names if not (results / f"{name}.csv").is_file()]
    if missing:
        return ["## Claims table", "", f"Not computed: {', '.join(missing)} missing (run `dvc repro aggregate`).", ""]
    tables = {name: read_table(results, name, params) for name in names}
    table = claims_table(tables, spec)
    write_csv(results / "claims.csv", table)
    sources = sorted({c.get("source", spec.get("source")) for c in spec["claims"]})
    lines = ["## Claims table", "",
             f"Claims as stated by {'the source' if len(sources) == 1 else 'their sources'} "
             f"({'; '.join(sources)}), each tested by the comparison named in its row. The claims and their "
             f"comparisons (baseline, budget, metric) are data, `{claims_file}`, fixed before the study was run "
             "and not to be changed after looking at the numbers. Measured: mean paired difference over seeds "
             "with a 95 % Student-t interval. Rule:", "",
             *[f"> {line}" for line in rule[rule.index("- not supported"):].strip().splitlines()], ""]
    lines += verdict_summary(table, spec["claims"])
    for claim in spec["claims"]:
        part = table[table["claim"] == claim["id"]]
        if part.empty:
            continue
        notes = {MEASURES.get(p["measure"]).note for p in claim["parts"]} - {""}
        extra = [c for c in ("seeds_not_matched",) if c in part.columns and part[c].notna().any()]
        shown = part.assign(part=[p + ("" if primary else " (secondary)") for p, primary in zip(part["part"], part["primary"])],
                            measured=[measured(r) for _, r in part.iterrows()],
                            **{c: part[c].map(lambda v: "" if pd.isna(v) else str(int(v))) for c in extra})
        verdicts = ", ".join(f"{label(d, m)}: **{v}**"
                             for (d, m), v in part.groupby(["dataset", "model"])["claim_verdict"].first().items())
        source = claim.get("source")
        lines += [f"### Claim {claim['id']}: {' '.join(claim['text'].split())}", "",
                  *([f"Source: {source}.", ""] if source else []), f"Verdict — {verdicts}", "",
                  *[f"{note}" for note in sorted(notes)], *([""] if notes else []),
                  markdown(shown[["dataset", "model", "part", "comparison", "stated", "measured", "n", *extra, "verdict"]]
                           .rename(columns={"stated": "source states", "seeds_not_matched": "seeds not matched"})), ""]
    return lines + discussion(table, spec["claims"])


def figures_section(figures: Path) -> list[str]:
    """Every figure file, grouped by kind, with the caption that says what to look for."""
    from bench.analyse.figures import CAPTIONS

    lines = ["## Figures", ""]
    pngs = sorted(figures.glob("*.png"))
    for kind, caption in CAPTIONS.items():
        mine = [p for p in pngs if p.stem.startswith(f"{kind}_")]
        if not mine:
            continue
        links = ", ".join(f"[{p.stem}](../{figures.name}/{p.name}) ([PDF](../{figures.name}/{p.stem}.pdf))" for p in mine)
        lines += [f"- **{kind.replace('_', ' ')}**: {caption} {links}"]
    others = [p for p in pngs if not any(p.stem.startswith(f"{k}_") for k in CAPTIONS)]
    lines += [f"- [{p.stem}](../{figures.name}/{p.name})" for p in others]
    return lines + [""]


def unreached_budgets(results: Path, params: dict | None = None) -> dict:
    """(dataset, model, method, budget) → (seeds whose exit policy cannot reach the tuned budget, seeds), where any."""
    from bench.analyse.figures import reached

    if not all((results / f"{name}.csv").is_file() for name in ("budgets", "operating_points")):
        return {}
    budgets, points = read_table(results, "budgets", params), read_table(results, "operating_points", params)
    tuned = budgets[(budgets["calibrator"] == "optuna_per_exit") & budgets["feasible"].astype(bool)]
    tuned = tuned.assign(missed=~reached(tuned, points[points["calibrator"] == "exact_single"]))
    counts = tuned.groupby(["dataset", "model", "method", "budget"])["missed"].agg(["sum", "size"])
    return {key: (int(r["sum"]), int(r["size"])) for key, r in counts.iterrows() if r["sum"] > 0}


def write_report(results: Path, figures: Path, params: dict) -> Path:
    from bench.config import models_of, setting

    exits, budgets = read_table(results, "summary_exits", params), read_table(results, "summary_budgets", params)
    runs, per_exit = read_table(results, "runs", params), read_table(results, "per_exit", params)
    significance = read_table(results, "significance", params)
    lines = ["# eebench report", "",
             "Generated by `eebench figures` from the aggregated tables in `results/`; do not edit by hand.", "",
             "## Setup", ""]
    for (dataset, model), group in runs.groupby(["dataset", "model"]):
        first = group.iloc[0]
        flops = per_exit[(per_exit["dataset"] == dataset) & (per_exit["model"] == model)].groupby("exit")[
            ["cumulative_flops", "cumulative_macs"]].first()
        section = params["train"].get(dataset, {})
        known = "model" in section and model in ("", *models_of(params, dataset))
        trained = setting(params, dataset, model or None) if known else section
        lines += [f"### {label(dataset, model)}", "",
                  f"- splits: train {first['train_size']}, validation {first['val_size']} (thresholds are tuned here), "
                  f"test {first['test_size']} (reported only)",
                  f"- training: `{trained}`",
                  f"- methods: {', '.join(sorted(group['method'].unique()))}; seeds: {sorted(group['seed'].unique().tolist())}",
                  f"- cumulative cost per exit ({per_exit['flops_unit'].iloc[0]}; counter {per_exit['counter'].iloc[0]}): "
                  + ", ".join(f"exit {k}: {r.cumulative_flops:,} FLOPs = {r.cumulative_macs:,} MACs" for k, r in flops.iterrows()),
                  f"- mean time per epoch: {group['seconds_per_epoch'].mean():.1f} s "
                  f"(torch {values(group, 'torch')}, {values(group, 'threads')} threads, {values(group, 'device')}, "
                  f"commit {values(group, 'git_commit')})", ""]
    failed = read_table(results, "failed_runs", params) if (results / "failed_runs.csv").is_file() else pd.DataFrame()
    if len(failed):
        lines += ["## Failed runs (excluded from every table)", "", markdown(failed), ""]
    lines += ["## Headline results", "",
              "Mean over seeds with a 95 % Student-t interval in brackets (none with one seed). Budgets are expected "
              "FLOPs as a fraction of the deepest exit's; thresholds were chosen by Optuna on validation and applied "
              "once to test. † k/n: on k of n seeds the method's exit policy cannot reach the budget (it has no "
              "operating point near it), so its cheapest operating point, well below the budget, is reported "
              "instead.", ""]
    unreached = unreached_budgets(results, params)
    for (dataset, model), part in exits.groupby(["dataset", "model"], sort=True):
        mine = budgets[(budgets["dataset"] == dataset) & (budgets["model"] == model)]
        lines += [f"### {label(dataset, model)}", "", markdown(headline(dataset, model, part, mine, unreached)), ""]
    lines += ["## Paired comparisons", "",
              f"Each method against `{params['analyse']['reference']}` on the same seeds: mean difference, effect size "
              f"d_z, paired t-test p-value, Holm-corrected over each dataset × model's family, significant at α = "
              f"{params['analyse']['alpha']} only with at least 3 paired seeds.", ""]
    if len(significance):
        table = significance.assign(**{"mean difference (pts)": (significance["mean_difference"] * 100).round(2),
                                       "p (Holm)": significance["p_holm"].round(4),
                                       "note": significance["note"].fillna("")})  # 5+ seeds: no note
        lines += [markdown(table[["dataset", "model", "comparison", "method", "n", "mean difference (pts)", "effect_size_dz",
                                  "p (Holm)", "significant", "note"]].round(3)), ""]
    else:
        lines += ["No comparisons: the reference method or paired seeds are missing.", ""]
    lines += claims_section(results, params["analyse"].get("claims"), params)
    lines += compute_section(runs)
    lines += figures_section(figures)
    return_path = results / "REPORT.md"
    write_text(return_path, "\n".join(lines) + "\n")
    return return_path
