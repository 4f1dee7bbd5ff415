"""Paper figures from the aggregated tables only (results/*.csv): each as PDF and PNG, one style, a
colour-blind-safe palette (seaborn "colorblind", with markers to tell apart more than ten methods)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.io import atomic_path  # noqa: E402
from bench.tune.pareto import pareto_mask  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "axes.titleweight": "bold", "legend.frameon": False})


def method_styles(methods: list[str]) -> dict[str, dict]:
    palette = sns.color_palette("colorblind", 10)
    return {m: {"color": palette[i % 10], "marker": MARKERS[(i // 10) % len(MARKERS)]} for i, m in enumerate(methods)}


METADATA = {"pdf": {"CreationDate": None, "Producer": None}, "png": {"Software": None}}


def save(fig, folder: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("pdf", "png"):
        with atomic_path(folder / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata=METADATA[ext])  # no creation date: same tables, same bytes
        paths.append(folder / f"{name}.{ext}")
    plt.close(fig)
    return paths


def wide(summary: pd.DataFrame, index: list[str], metrics: list[str]) -> pd.DataFrame:
    """summary rows (…, metric, mean, ci_low, ci_high) → one row per index with <metric>_{mean,low,high}."""
    part = summary[summary["metric"].isin(metrics)]
    out = part.pivot_table(index=index, columns="metric", values=["mean", "ci_low", "ci_high"], dropna=False)
    out.columns = [f"{metric}_{stat}" for stat, metric in out.columns]
    return out.reset_index()


def pareto_data(budgets: pd.DataFrame) -> pd.DataFrame:
    """Per (method, budget): mean test accuracy and expected FLOPs with CIs, and whether the point is on
    the frontier over all methods."""
    data = wide(budgets, ["method", "budget"], ["test_accuracy", "test_expected_flops"])
    data["frontier"] = pareto_mask(data["test_accuracy_mean"].to_numpy(), data["test_expected_flops_mean"].to_numpy())
    return data


def figure_pareto(dataset: str, budgets: pd.DataFrame, exits: pd.DataFrame, styles: dict, folder: Path):
    data = pareto_data(budgets)
    deepest = exits[(exits["metric"] == "test_accuracy") & (exits["exit"] == exits["exit"].max())]
    flops = exits.attrs.get("deepest_flops")
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for method, group in data.groupby("method"):
        group = group.sort_values("test_expected_flops_mean")
        x = group["test_expected_flops_mean"] / 1e6
        ax.plot(x, group["test_accuracy_mean"] * 100, label=method, **styles[method], ms=4, lw=1.2)
        ax.fill_between(x, group["test_accuracy_ci_low"] * 100, group["test_accuracy_ci_high"] * 100,
                        color=styles[method]["color"], alpha=0.15, lw=0)
    if flops is not None and len(deepest):
        best = deepest["mean"].max()
        ax.scatter([flops / 1e6], [best * 100], marker="*", s=140, color="black", zorder=5,
                   label="deepest exit (best method)")
    front = data[data["frontier"]].sort_values("test_expected_flops_mean")
    ax.step(front["test_expected_flops_mean"] / 1e6, front["test_accuracy_mean"] * 100, where="post", color="black",
            ls="--", lw=1, label="Pareto frontier (all methods)")
    bottom, top = pareto_axis(data)
    ax.set_ylim(bottom, top)
    below = data[data["test_accuracy_mean"] * 100 < bottom].groupby("method")["test_accuracy_mean"].agg(["min", "max"])
    if len(below):  # one far-off method must not squash the comparison of the rest: say where it is instead
        ax.text(0.01, 0.01, "below the axis: " + "; ".join(f"{m} ({r['min'] * 100:.1f}–{r['max'] * 100:.1f} %)"
                                                            for m, r in below.iterrows()),
                transform=ax.transAxes, fontsize=6, va="bottom")
    ax.set(xlabel="expected cost (MFLOPs per sample, test)", ylabel="test accuracy (%)",
           title=f"{dataset}: accuracy vs expected FLOPs (budgets tuned on validation; 95 % CI)")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return save(fig, folder, f"pareto_{dataset}")


def pareto_axis(data: pd.DataFrame, margin: float = 6.0) -> tuple[float, float]:
    """Accuracy axis (%) from `margin` points below the Pareto frontier's lowest point to just above the best."""
    accuracy = data["test_accuracy_mean"] * 100
    front = accuracy[data["frontier"]]
    return max(0.0, min(front.min(), accuracy.max()) - margin), min(100.0, accuracy.max() + 1.5)


def exit_fraction_data(budgets: pd.DataFrame) -> pd.DataFrame:
    part = budgets[budgets["metric"].str.match(r"test_exit\d+_fraction")].copy()
    part["exit"] = part["metric"].str.extract(r"test_exit(\d+)_fraction")[0].astype(int)
    return part[["method", "budget", "exit", "mean", "ci_low", "ci_high"]]


def figure_exit_distribution(dataset: str, budgets: pd.DataFrame, styles: dict, folder: Path):
    data = exit_fraction_data(budgets)
    levels = sorted(data["budget"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.4), sharey=True, squeeze=False)
    methods = list(styles)
    for ax, budget in zip(axes[0], levels):
        part = data[data["budget"] == budget]
        exits = sorted(part["exit"].unique())
        width = 0.8 / max(len(methods), 1)
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("exit").reindex(exits)
            ax.bar(np.arange(len(exits)) + (i - len(methods) / 2 + 0.5) * width, rows["mean"], width,
                   color=styles[method]["color"], label=method)
        ax.set(title=f"budget {budget:g}", xlabel="exit", xticks=range(len(exits)))
    axes[0][0].set_ylabel("fraction of test samples")
    axes[0][-1].legend(fontsize=6, ncol=1, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{dataset}: where test samples leave (mean over seeds)")
    return save(fig, folder, f"exit_distribution_{dataset}")


def grad_data(grad_stats: pd.DataFrame) -> pd.DataFrame:
    data = grad_stats.assign(sample_share=grad_stats["samples_with_grad"] / grad_stats["batch_size"],
                             effective_share=grad_stats["effective_samples"] / grad_stats["batch_size"])
    return (data.groupby(["method", "exit", "step"])
            [["backbone_grad_norm", "head_grad_norm", "sample_share", "effective_share"]].mean().reset_index())


def figure_grad_norm(dataset: str, grad_stats: pd.DataFrame, styles: dict, folder: Path):
    data = grad_data(grad_stats)
    exits = sorted(data["exit"].unique())
    fig, axes = plt.subplots(len(exits), 2, figsize=(9, 2.3 * len(exits)), sharex=True, squeeze=False)
    for row, k in enumerate(exits):
        for method, group in data[data["exit"] == k].groupby("method"):
            look = {"color": styles[method]["color"], "marker": styles[method]["marker"], "ms": 2, "lw": 1}
            norms = group["backbone_grad_norm"].where(group["backbone_grad_norm"] > 0)  # 0 cannot sit on a log axis
            axes[row][0].plot(group["step"], norms, label=method, **look)
            axes[row][1].plot(group["step"], group["effective_share"], **look)
        axes[row][0].set(yscale="log", ylabel=f"exit {k}\n‖∇ backbone‖")
        axes[row][1].set(ylim=(0, 1.05), ylabel="effective samples\n/ batch")
    axes[-1][0].set_xlabel("optimiser step")
    axes[-1][1].set_xlabel("optimiser step")
    axes[0][0].set_title("‖gradient‖ of exit k's loss into the backbone (0: gap)", fontsize=9)
    axes[0][1].set_title("effective share of the batch carrying it", fontsize=9)
    axes[0][1].legend(*axes[0][0].get_legend_handles_labels(), fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{dataset}: per-exit gradient signal during training (mean over seeds)")
    return save(fig, folder, f"grad_norm_{dataset}")


def figure_per_exit_accuracy(dataset: str, exits: pd.DataFrame, styles: dict, folder: Path):
    data = exits[exits["metric"] == "test_accuracy"]
    levels = sorted(data["exit"].unique())
    methods = list(styles)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, method in enumerate(methods):
        rows = data[data["method"] == method].set_index("exit").reindex(levels)
        err = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]) * 100
        ax.bar(np.arange(len(levels)) + (i - len(methods) / 2 + 0.5) * width, rows["mean"] * 100, width,
               yerr=np.nan_to_num(err), capsize=1.5, color=styles[method]["color"], label=method)
    low = data["mean"].min() * 100
    ax.set(ylim=(max(0, low - 5), 100), xticks=range(len(levels)), xticklabels=[f"exit {k}" for k in levels],
           ylabel="test accuracy (%)", title=f"{dataset}: accuracy of every exit on all test samples (95 % CI)")
    ax.legend(fontsize=6, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save(fig, folder, f"per_exit_accuracy_{dataset}")


def reliability_data(calibration: pd.DataFrame) -> pd.DataFrame:
    """Bins pooled over seeds: count-weighted mean confidence and accuracy."""
    data = calibration.assign(conf_sum=calibration["confidence"] * calibration["count"],
                              acc_sum=calibration["accuracy"] * calibration["count"])
    pooled = data.groupby(["method", "exit", "bin"])[["count", "conf_sum", "acc_sum"]].sum().reset_index()
    pooled = pooled[pooled["count"] > 0]
    return pooled.assign(confidence=pooled["conf_sum"] / pooled["count"], accuracy=pooled["acc_sum"] / pooled["count"])


def figure_calibration(dataset: str, calibration: pd.DataFrame, exits: pd.DataFrame, styles: dict, folder: Path):
    data = reliability_data(calibration)
    ece = exits[exits["metric"] == "test_ece"].set_index(["method", "exit"])["mean"]
    levels = sorted(data["exit"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(3.3 * len(levels), 3.4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], levels):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for method, group in data[data["exit"] == k].groupby("method"):
            ax.plot(group["confidence"], group["accuracy"], color=styles[method]["color"], marker=styles[method]["marker"],
                    ms=2.5, lw=1, label=f"{method} (ECE {ece.get((method, k), np.nan) * 100:.1f})")
        ax.set(title=f"exit {k}", xlabel="confidence (max softmax)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=5)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(f"{dataset}: reliability per exit (15 equal-width bins, test; ECE in %)")
    return save(fig, folder, f"calibration_{dataset}")


def make_figures(results: Path, folder: Path) -> list[Path]:
    style()
    tables = {name: pd.read_csv(results / f"{name}.csv") for name in
              ("summary_budgets", "summary_exits", "grad_stats", "calibration", "per_exit")}
    paths = []
    for dataset in sorted(tables["summary_exits"]["dataset"].unique()):
        part = {name: frame[frame["dataset"] == dataset] for name, frame in tables.items()}
        styles = method_styles(sorted(part["summary_exits"]["method"].unique()))
        exits = part["summary_exits"].copy()
        exits.attrs["deepest_flops"] = part["per_exit"]["cumulative_flops"].max()
        paths += figure_pareto(dataset, part["summary_budgets"], exits, styles, folder)
        paths += figure_exit_distribution(dataset, part["summary_budgets"], styles, folder)
        if len(part["grad_stats"]):
            paths += figure_grad_norm(dataset, part["grad_stats"], styles, folder)
        paths += figure_per_exit_accuracy(dataset, exits, styles, folder)
        paths += figure_calibration(dataset, part["calibration"], exits, styles, folder)
    return paths
