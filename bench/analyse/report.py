"""results/REPORT.md, generated from the aggregated tables (and params.yaml for the settings)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.io import write_csv, write_text


def fmt_ci(mean: float, low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(low):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def headline(dataset: str, exits: pd.DataFrame, budgets: pd.DataFrame) -> pd.DataFrame:
    deepest = exits[(exits["metric"] == "test_accuracy") & (exits["exit"] == exits["exit"].max())].set_index("method")
    rows = []
    for method in sorted(deepest.index):
        row = {"method": method, "deepest exit acc. (%)": fmt_ci(*deepest.loc[method, ["mean", "ci_low", "ci_high"]])}
        part = budgets[budgets["method"] == method]
        for budget in sorted(part["budget"].unique()):
            at = part[part["budget"] == budget].set_index("metric")
            for metric, label, scale in (("test_accuracy", "acc. (%)", 100), ("test_flops_fraction", "FLOPs (% of deepest)", 100),
                                         ("test_early_exit_accuracy", "early-exit acc. (%)", 100)):
                if metric in at.index:
                    row[f"@{budget:g}: {label}"] = fmt_ci(*at.loc[metric, ["mean", "ci_low", "ci_high"]], scale=scale,
                                                          digits=1 if "FLOPs" in label else 2)
        rows.append(row)
    return pd.DataFrame(rows)


CLAIM_TEXT = {
    "1": "CGT lowers average inference cost by up to 42 % (vs other training methods at matched accuracy)",
    "2": "CGT improves overall accuracy by 0.8–1.3 points",
    "3": "CGT improves early-exit accuracy by 3.1–5.7 points",
    "4": "SoftCGT reaches the best accuracy while routing more samples to early exits than joint baselines",
    "5": "HardCGT routes even more samples early, but starves deep exits of training signal; SoftCGT does not",
    "6": "JEI-DNN's learned gates give a better accuracy/cost trade-off and better calibration than confidence "
         "thresholding on the same trained network",
}


def compute_section(runs: pd.DataFrame) -> list[str]:
    """Measured training time per run (the train stage; evaluate and tune add a few seconds each)."""
    runs = runs.assign(train_seconds=runs["seconds_per_epoch"] * runs["epochs"])
    table = runs.groupby(["dataset", "method"]).agg(runs=("seed", "size"), epochs=("epochs", "first"),
                                                    seconds_per_run=("train_seconds", "mean"),
                                                    seconds_per_epoch=("seconds_per_epoch", "mean")).reset_index()
    totals = runs.groupby("dataset")["train_seconds"].sum()
    return ["## Compute", "",
            f"Training time per run, mean over seeds ({runs['threads'].iloc[0]} threads, {runs['device'].iloc[0]}). "
            "Total training time: " + ", ".join(f"{d} {s / 60:.1f} min" for d, s in totals.items()) + ".", "",
            markdown(table.round(1)), ""]


def claims_section(results: Path, spec: dict) -> list[str]:
    """The claims table (also written to results/claims.csv), with its pre-registered rule."""
    from bench.analyse.claims import SOURCE, __doc__ as rule, claims_table

    names = ("runs", "per_exit", "budgets", "operating_points", "threshold_curves", "grad_stats")
    missing = [f"results/{name}.csv" for name in names if not (results / f"{name}.csv").is_file()]
    if missing:
        return ["## Claims table", "", f"Not computed: {', '.join(missing)} missing (run `dvc repro aggregate`).", ""]
    tables = {name: pd.read_csv(results / f"{name}.csv") for name in names}
    table = claims_table(tables, spec)
    write_csv(results / "claims.csv", table)
    shown = table.assign(
        claim=[f"{c}" + ("" if p else " (secondary)") for c, p in zip(table["claim"], table["primary"])],
        measured=[("–" if pd.isna(m) else f"{m:+.2f}" if pd.isna(lo) else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                  + ("" if pd.isna(m) else f" {u}") for m, lo, hi, u in
                  zip(table["mean"], table["ci_low"], table["ci_high"], table["unit"])])
    lines = ["## Claims table", "",
             f"Claims as stated by the source ({SOURCE}), each tested by the comparison named in its row. The "
             "comparisons (baseline, budget, metric) were fixed in `params.yaml` (`analyse.claims`) and "
             "`bench/analyse/claims.py` before the study was run, and are not to be changed after looking at "
             "the numbers. Measured: mean paired difference over seeds with a 95 % Student-t interval. Rule:", "",
             *[f"> {line}" for line in rule[rule.index("- not supported"):].strip().splitlines()], ""]
    for number, text in CLAIM_TEXT.items():
        part = shown[shown["claim"].str.split().str[0] == number]
        part = part.assign(seeds_not_matched=part["seeds_not_matched"].map(lambda v: "" if pd.isna(v) else str(int(v))))
        if part.empty:
            continue
        verdicts = ", ".join(f"{d}: **{v}**" for d, v in part.groupby("dataset")["claim_verdict"].first().items())
        lines += [f"### Claim {number}: {text}", "", f"Verdict — {verdicts}", "",
                  markdown(part[["dataset", "part", "comparison", "stated", "measured", "n",
                                 *(["seeds_not_matched"] if number == "1" else []), "verdict"]]
                           .rename(columns={"stated": "source states", "seeds_not_matched": "seeds not matched"})), ""]
    return lines


def write_report(results: Path, figures: Path, params: dict) -> Path:
    exits = pd.read_csv(results / "summary_exits.csv")
    budgets = pd.read_csv(results / "summary_budgets.csv")
    runs = pd.read_csv(results / "runs.csv")
    per_exit = pd.read_csv(results / "per_exit.csv")
    significance = pd.read_csv(results / "significance.csv") if (results / "significance.csv").stat().st_size > 1 else pd.DataFrame()
    lines = ["# eebench report", "",
             "Generated by `eebench figures` from the aggregated tables in `results/`; do not edit by hand.", "",
             "## Setup", ""]
    for dataset, group in runs.groupby("dataset"):
        first = group.iloc[0]
        flops = per_exit[(per_exit["dataset"] == dataset)].groupby("exit")[["cumulative_flops", "cumulative_macs"]].first()
        lines += [f"### {dataset}", "",
                  f"- splits: train {first['train_size']}, validation {first['val_size']} (thresholds are tuned here), "
                  f"test {first['test_size']} (reported only)",
                  f"- training: `{params['train'].get(dataset, {})}`",
                  f"- methods: {', '.join(sorted(group['method'].unique()))}; seeds: {sorted(group['seed'].unique().tolist())}",
                  f"- cumulative cost per exit ({per_exit['flops_unit'].iloc[0]}; counter {per_exit['counter'].iloc[0]}): "
                  + ", ".join(f"exit {k}: {r.cumulative_flops:,} FLOPs = {r.cumulative_macs:,} MACs" for k, r in flops.iterrows()),
                  f"- mean time per epoch: {group['seconds_per_epoch'].mean():.1f} s "
                  f"(torch {first['torch']}, {first['threads']} threads, {first['device']}, commit {first['git_commit']})", ""]
    failed = pd.read_csv(results / "failed_runs.csv") if (results / "failed_runs.csv").is_file() else pd.DataFrame()
    if len(failed):
        lines += ["## Failed runs (excluded from every table)", "", markdown(failed), ""]
    lines += ["## Headline results", "",
              "Mean over seeds with a 95 % Student-t interval in brackets (none with one seed). Budgets are expected "
              "FLOPs as a fraction of the deepest exit's; thresholds were chosen by Optuna on validation and applied "
              "once to test.", ""]
    for dataset in sorted(exits["dataset"].unique()):
        lines += [f"### {dataset}", "", markdown(headline(dataset, exits[exits["dataset"] == dataset],
                                                           budgets[budgets["dataset"] == dataset])), ""]
    lines += ["## Paired comparisons", "",
              f"Each method against `{params['analyse']['reference']}` on the same seeds: mean difference, effect size "
              f"d_z, paired t-test p-value, Holm-corrected over each dataset's family, significant at α = "
              f"{params['analyse']['alpha']} only with at least 3 paired seeds.", ""]
    if len(significance):
        table = significance.assign(**{"mean difference (pts)": (significance["mean_difference"] * 100).round(2),
                                       "p (Holm)": significance["p_holm"].round(4)})
        lines += [markdown(table[["dataset", "comparison", "method", "n", "mean difference (pts)", "effect_size_dz",
                                  "p (Holm)", "significant", "note"]].round(3)), ""]
    else:
        lines += ["No comparisons: the reference method or paired seeds are missing.", ""]
    lines += claims_section(results, params["analyse"]["claims"])
    lines += compute_section(runs)
    lines += ["## Figures", ""]
    for path in sorted(figures.glob("*.png")):
        lines.append(f"- [{path.stem}](../{figures.name}/{path.name}) ([PDF](../{figures.name}/{path.stem}.pdf))")
    return_path = results / "REPORT.md"
    write_text(return_path, "\n".join(lines) + "\n")
    return return_path
