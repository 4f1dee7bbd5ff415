"""Paper figures from the aggregated tables only (results/*.csv): each as PDF and PNG, one style, one palette
per study (`method_styles`: a method keeps its colour and marker in every figure and on every dataset).
Which methods each figure shows is `analyse.figures` in params.yaml (`select`). One file per figure kind and
dataset; a dataset studied with several models shows them side by side, one panel group per model (`Canvas`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.analyse.stats import t_interval  # noqa: E402
from bench.analyse.tables import label, read_table, with_model  # noqa: E402
from bench.io import atomic_path  # noqa: E402
from bench.tune.pareto import pareto_mask  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "h"]  # no "X": it marks a budget a policy cannot reach
# what each figure shows and what to look for (the report prints it under the figure's link)
CAPTIONS = {
    "pareto": "Test accuracy against expected cost for each method's dense validation-tuned operating points "
              "(one panel per method, the others in grey, the frontier of all methods dashed); look for curves that "
              "lie on the frontier, and for red crosses: tuned budgets the method's exit policy cannot reach.",
    "exit_distribution": "Where test samples leave the network at each tuned budget; look for methods that keep "
                         "more samples at the early exits at the same budget.",
    "grad_norm": "Gradient signal each exit's loss sends into the backbone during training (top) and the share of "
                 "the batch carrying it (bottom), one panel per exit; look for a method whose deep-exit curves sit "
                 "far below the others (starved deep exits). Steps that train no exit (JEI-DNN's gate epochs) are "
                 "left out.",
    "per_exit_accuracy": "Accuracy of every exit on all test samples (95 % CI); look at how much the early exits "
                         "lose to the last one, and whether a method trades deep accuracy for early accuracy.",
    "calibration": "Reliability per exit (confidence against accuracy, pooled over seeds; ECE in the legend); "
                   "look for curves below the diagonal (over-confident exits).",
}


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "axes.titleweight": "bold", "legend.frameon": False})


def method_styles(methods: list[str]) -> dict[str, dict]:
    """The study's one palette: colour and marker by the method's position in the study's sorted method list
    (seaborn's colour-blind-safe colours, then their dark shades for methods 11-20; markers cycle beside them,
    so two methods never share both)."""
    palette = sns.color_palette("colorblind", 10) + sns.color_palette("dark", 10)
    return {m: {"color": palette[i % 20], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(sorted(methods))}


def select(kind: str, available: list[str], analyse: dict | None) -> list[str]:
    """The methods figure `kind` shows: analyse.figures.<kind> is "all", "claims" (the claims' methods and the
    reference; every method when the study has no claims) or a list; only methods with results are kept."""
    from bench.analyse.claims import claim_methods, load_claims

    analyse = analyse or {}
    choice = analyse.get("figures", {}).get(kind, "all")
    if choice == "claims":
        if not analyse.get("claims"):
            return sorted(available)
        choice = [*claim_methods(load_claims(analyse["claims"])), analyse.get("reference")]
    if choice == "all":
        return sorted(available)
    return [m for m in sorted(available) if m in choice]


class Canvas:
    """The figure of one kind on one dataset: the whole figure for a single model; with several models, one
    subfigure per model side by side, each drawn by the same function (`panels` creates its grid of axes)."""

    def __init__(self, models: list[str]):
        self.models, self.figure, self.parts = models, None, []

    def panels(self, index: int, rows: int, columns: int, figsize: tuple[float, float], **kw):
        """(figure or subfigure, axes[rows][columns]) for model number `index`; the first call sizes the figure
        (each model's panels the size one model's figure would have)."""
        if self.figure is None:
            n = len(self.models)
            self.figure = plt.figure(figsize=(figsize[0] * n, figsize[1]), layout="constrained" if n > 1 else None)
            self.parts = [self.figure] if n == 1 else list(self.figure.subfigures(1, n, wspace=0.04))
        part = self.parts[index]
        return part, part.subplots(rows, columns, squeeze=False, **kw)


def tight(fig, rect: tuple) -> None:
    """tight_layout for a whole figure; subfigures are laid out by the parent's constrained layout."""
    if isinstance(fig, matplotlib.figure.Figure) and fig.get_layout_engine() is None:
        fig.tight_layout(rect=rect)


METADATA = {"pdf": {"CreationDate": None, "Producer": None}, "png": {"Software": None}}


def save(fig, folder: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("pdf", "png"):
        with atomic_path(folder / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata=METADATA[ext])  # no creation date: same tables, same bytes
        paths.append(folder / f"{name}.{ext}")
    plt.close(fig)
    return paths


RUN = ["dataset", "model", "method", "seed", "policy"]
UNREACHED_GAP = 0.05  # interim rule (until the tune stage records it): see `reached`


def reached(frame: pd.DataFrame, points: pd.DataFrame) -> pd.Series:
    """Per row (a run's operating point at a budget): could the run's exit policy spend the budget? The tune
    stage's `reached` column where the tables have it; otherwise the point counts as unreached when it is the
    policy's cheapest dense operating point (everything as early as the policy allows) and lies more than
    UNREACHED_GAP below the budget: the budget was filled with the cheapest point, not reached."""
    if "reached" in frame.columns:
        return frame["reached"].astype(bool)
    run = [c for c in RUN if c in frame.columns and c in points.columns]  # a table made by hand may lack `model`
    cheapest = points.groupby(run)["val_flops_fraction"].min().rename("cheapest")
    merged = frame.join(cheapest, on=run)
    at_cheapest = np.isclose(merged["val_flops_fraction"], merged["cheapest"])
    return pd.Series(~(at_cheapest & (merged["budget"] - merged["val_flops_fraction"] > UNREACHED_GAP)),
                     index=frame.index)


def own_points(points: pd.DataFrame, runs: pd.DataFrame, calibrator: str) -> pd.DataFrame:
    """Operating points of each run's own exit policy by one calibrator, with `reached`."""
    own = runs.groupby("method")["exit_policy"].first()
    part = points[(points["calibrator"] == calibrator) & (points["policy"] == points["method"].map(own))]
    dense = points[(points["calibrator"] == "exact_single") & (points["policy"] == points["method"].map(own))]
    return part.assign(reached=reached(part, dense))


def dense_curves(points: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, budget of the dense grid): mean test cost and accuracy over seeds of the validation-tuned
    single-threshold point, a 95 % t-interval of the accuracy, whether every seed reached the budget, and
    whether the mean point is on the frontier over all methods."""
    part = own_points(points, runs, "exact_single")
    rows = []
    for (method, budget), group in part.groupby(["method", "budget"]):
        mean, low, high = t_interval(group["test_accuracy"].to_numpy(), bounds=(0.0, 1.0))
        rows.append({"method": method, "budget": budget, "cost": group["test_flops_fraction"].mean(),
                     "accuracy": mean, "accuracy_low": low, "accuracy_high": high, "seeds": len(group),
                     "reached": bool(group["reached"].all())})
    data = pd.DataFrame(rows)
    data["frontier"] = pareto_mask(data["accuracy"].to_numpy(), data["cost"].to_numpy())
    return data


def tuned_points(points: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, tuned budget): mean test cost and accuracy of the Optuna per-exit thresholds, and how many
    seeds reached the budget."""
    part = own_points(points, runs, "optuna_per_exit")
    return part.groupby(["method", "budget"]).agg(cost=("test_flops_fraction", "mean"),
                                                  accuracy=("test_accuracy", "mean"), seeds=("seed", "size"),
                                                  reached_seeds=("reached", "sum")).reset_index()


def pareto_axis(data: pd.DataFrame, margin: float = 6.0) -> tuple[float, float]:
    """Accuracy axis (%) from `margin` points below the Pareto frontier's lowest point to just above the best."""
    accuracy = data["accuracy"] * 100
    front = accuracy[data["frontier"]]
    return max(0.0, min(front.min(), accuracy.max()) - margin), min(100.0, accuracy.max() + 1.5)


def grid_shape(count: int, columns: int = 5) -> tuple[int, int]:
    columns = min(columns, count) if count > 4 else min(count, 4)
    return -(-count // columns), columns


def figure_pareto(title: str, points: pd.DataFrame, runs: pd.DataFrame, methods: list[str], styles: dict,
                  canvas: Canvas, index: int = 0):
    data = dense_curves(points, runs)
    tuned = tuned_points(points, runs)
    bottom, top = pareto_axis(data)
    front = data[data["frontier"]].sort_values("cost")
    rows, columns = grid_shape(len(methods))
    fig, axes = canvas.panels(index, rows, columns, (2.35 * columns + 0.4, 2.1 * rows + 0.7), sharex=True,
                              sharey=True)
    for ax, method in zip(axes.flat, methods):
        for other, group in data[data["method"] != method].groupby("method"):
            group = group.sort_values("budget")
            ax.plot(group["cost"] * 100, group["accuracy"] * 100, color="0.8", lw=0.6, zorder=1)
        ax.step(front["cost"] * 100, front["accuracy"] * 100, where="post", color="black", ls="--", lw=0.7, zorder=2)
        own = data[data["method"] == method].sort_values("budget")
        look = styles[method]
        x, y = own["cost"] * 100, own["accuracy"] * 100
        ax.fill_between(x, own["accuracy_low"] * 100, own["accuracy_high"] * 100, color=look["color"], alpha=0.2,
                        lw=0, zorder=3)
        ok = own["reached"].to_numpy()
        for i in range(len(own) - 1):  # after a budget filled with the cheapest point: a dotted step, no line
            xs, ys = x.iloc[i:i + 2].to_numpy(), y.iloc[i:i + 2].to_numpy()  # through points that do not exist
            if ok[i]:
                ax.plot(xs, ys, color=look["color"], lw=1.4, zorder=4)
            else:
                ax.plot([xs[0], xs[1], xs[1]], [ys[0], ys[0], ys[1]], color=look["color"], lw=1.0, ls=":", zorder=4)
        ax.plot(x[ok], y[ok], ls="none", marker=look["marker"], ms=2.5, color=look["color"], zorder=5, label=method)
        for _, point in tuned[tuned["method"] == method].iterrows():
            full = point["reached_seeds"] == point["seeds"]
            ax.axvline(point["budget"] * 100, color="0.6", lw=0.5, ls=":", zorder=0)
            ax.plot(point["cost"] * 100, point["accuracy"] * 100, ls="none", zorder=6,
                    **({"marker": look["marker"], "ms": 6, "color": look["color"], "mec": "black", "mew": 0.7}
                       if full else {"marker": "X", "ms": 7, "color": "#d62728", "mec": "white", "mew": 0.5}))
        ax.set_title(method, fontsize=8, color=look["color"])
        low = own[own["accuracy"] * 100 < bottom]
        if len(low):  # a far-off method must not squash the comparison of the rest: say where it is instead
            ax.text(0.97, 0.03, f"{len(low)} points below: {low['accuracy'].min() * 100:.1f}–"
                    f"{low['accuracy'].max() * 100:.1f} %", transform=ax.transAxes, fontsize=6, ha="right",
                    va="bottom", color=look["color"])
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    axes.flat[0].set_ylim(bottom, top)
    axes.flat[0].set_xlim(0, 102)
    for ax in axes[-1]:
        ax.set_xlabel("expected cost (% of deepest exit's FLOPs)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)", fontsize=7)
    handles = [plt.Line2D([], [], color="0.4", lw=1.4, marker="o", ms=2.5,
                          label="dense validation-tuned curve (mean over seeds, 95 % CI)"),
               plt.Line2D([], [], color="0.4", lw=1.0, ls=":", label="no operating point (budgets not reachable)"),
               plt.Line2D([], [], color="0.4", ls="none", marker="o", ms=6, mec="black", label="tuned budget (Optuna per exit)"),
               plt.Line2D([], [], color="#d62728", ls="none", marker="X", ms=7, label="budget the policy cannot reach"),
               plt.Line2D([], [], color="black", ls="--", lw=0.7, label="Pareto frontier (all methods)"),
               plt.Line2D([], [], color="0.8", lw=0.6, label="other methods")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"{title}: accuracy against expected cost, thresholds tuned on validation, measured on test",
                 fontsize=10, fontweight="bold")
    tight(fig, (0, 0.07, 1, 1))


def exit_fraction_data(budgets: pd.DataFrame) -> pd.DataFrame:
    part = budgets[budgets["metric"].str.match(r"test_exit\d+_fraction")].copy()
    part["exit"] = part["metric"].str.extract(r"test_exit(\d+)_fraction")[0].astype(int)
    return part[["method", "budget", "exit", "mean", "ci_low", "ci_high"]]


def figure_exit_distribution(title: str, budgets: pd.DataFrame, methods: list[str], styles: dict, canvas: Canvas,
                             index: int = 0):
    data = exit_fraction_data(budgets)
    levels = sorted(data["budget"].unique())
    if not levels:  # no method reaches any budget on this dataset × model: say so in the panel
        fig, axes = canvas.panels(index, 1, 1, (3.2, 3.4))
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no method reaches any\ntuned budget here", ha="center", va="center")
        fig.suptitle(f"{title}: where test samples leave", fontweight="bold")
        return
    fig, axes = canvas.panels(index, 1, len(levels), (3.2 * len(levels), 3.4), sharey=True)
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
    fig.suptitle(f"{title}: where test samples leave (mean over seeds)", y=1.03 if fig is canvas.figure and
                 len(canvas.models) == 1 else None, fontweight="bold")


def grad_data(grad_stats: pd.DataFrame) -> pd.DataFrame:
    """Per (method, exit, step): means over seeds. A logged step at which no exit of the run gets any gradient
    (e.g. JEI-DNN's gate-training epochs) trains no exit and says nothing about starvation: it is left out."""
    grad_stats = with_model(grad_stats, None)
    data = grad_stats.assign(sample_share=grad_stats["samples_with_grad"] / grad_stats["batch_size"],
                             effective_share=grad_stats["effective_samples"] / grad_stats["batch_size"])
    trains = data.groupby(["dataset", "model", "method", "seed", "step"])["effective_samples"].transform("sum") > 0
    data = data[trains]
    return (data.groupby(["method", "exit", "step"])
            [["backbone_grad_norm", "head_grad_norm", "sample_share", "effective_share"]].mean().reset_index())


def figure_grad_norm(title: str, grad_stats: pd.DataFrame, methods: list[str], styles: dict, canvas: Canvas,
                     index: int = 0):
    """Small multiples: one column per exit, the gradient norm into the backbone (top, log scale) and the
    effective share of the batch carrying it (bottom), shared axes; one line per method, mean over seeds."""
    data = grad_data(grad_stats[grad_stats["method"].isin(methods)])
    exits = sorted(data["exit"].unique())
    fig, axes = canvas.panels(index, 2, len(exits), (2.6 * len(exits) + 0.4, 4.6), sharex=True, sharey="row")
    for column, k in enumerate(exits):
        for method in methods:
            group = data[(data["exit"] == k) & (data["method"] == method)]
            if group.empty:
                continue
            look = {"color": styles[method]["color"], "marker": styles[method]["marker"], "ms": 2.5, "lw": 1.1,
                    "markevery": max(1, len(group) // 8)}
            norms = group["backbone_grad_norm"].where(group["backbone_grad_norm"] > 0)  # 0 cannot sit on a log axis
            axes[0][column].plot(group["step"], norms, label=method, **look)
            axes[1][column].plot(group["step"], group["effective_share"], label=method, **look)
        axes[0][column].set_title(f"exit {k}" + (" (last)" if k == exits[-1] else ""), fontsize=9)
        axes[0][column].set_yscale("log")
        axes[1][column].set(ylim=(0, 1.05), xlabel="optimiser step")
    axes[0][0].set_ylabel("‖∇ backbone‖ of the exit's loss\n(log; gap: no gradient)", fontsize=8)
    axes[1][0].set_ylabel("effective share of the batch\n(Σw)²/Σw² / batch", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 6), fontsize=7, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"{title}: gradient signal per exit during training (mean over seeds)", fontsize=10,
                 fontweight="bold")
    tight(fig, (0, 0.06, 1, 1))


def figure_per_exit_accuracy(title: str, exits: pd.DataFrame, methods: list[str], styles: dict, canvas: Canvas,
                             index: int = 0):
    data = exits[(exits["metric"] == "test_accuracy") & exits["method"].isin(methods)]
    levels = sorted(data["exit"].unique())
    width = 0.8 / max(len(methods), 1)
    _, axes = canvas.panels(index, 1, 1, (7, 3.4))
    ax = axes[0][0]
    for i, method in enumerate(methods):
        rows = data[data["method"] == method].set_index("exit").reindex(levels)
        err = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]) * 100
        ax.bar(np.arange(len(levels)) + (i - len(methods) / 2 + 0.5) * width, rows["mean"] * 100, width,
               yerr=np.nan_to_num(err), capsize=1.5, color=styles[method]["color"], label=method)
    low = data["mean"].min() * 100
    ax.set(ylim=(max(0, low - 5), 100), xticks=range(len(levels)), xticklabels=[f"exit {k}" for k in levels],
           ylabel="test accuracy (%)", title=f"{title}: accuracy of every exit on all test samples (95 % CI)")
    ax.legend(fontsize=6, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")


def reliability_data(calibration: pd.DataFrame) -> pd.DataFrame:
    """Bins pooled over seeds: count-weighted mean confidence and accuracy."""
    data = calibration.assign(conf_sum=calibration["confidence"] * calibration["count"],
                              acc_sum=calibration["accuracy"] * calibration["count"])
    pooled = data.groupby(["method", "exit", "bin"])[["count", "conf_sum", "acc_sum"]].sum().reset_index()
    pooled = pooled[pooled["count"] > 0]
    return pooled.assign(confidence=pooled["conf_sum"] / pooled["count"], accuracy=pooled["acc_sum"] / pooled["count"])


def figure_calibration(title: str, calibration: pd.DataFrame, exits: pd.DataFrame, methods: list[str],
                       styles: dict, canvas: Canvas, index: int = 0):
    data = reliability_data(calibration[calibration["method"].isin(methods)])
    ece = exits[exits["metric"] == "test_ece"].set_index(["method", "exit"])["mean"]
    levels = sorted(data["exit"].unique())
    fig, axes = canvas.panels(index, 1, len(levels), (3.3 * len(levels), 3.4), sharey=True)
    for ax, k in zip(axes[0], levels):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for method, group in data[data["exit"] == k].groupby("method"):
            ax.plot(group["confidence"], group["accuracy"], color=styles[method]["color"], marker=styles[method]["marker"],
                    ms=2.5, lw=1, label=f"{method} (ECE {ece.get((method, k), np.nan) * 100:.1f})")
        ax.set(title=f"exit {k}", xlabel="confidence (max softmax)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=5)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(f"{title}: reliability per exit (15 equal-width bins, test; ECE in %)", y=1.03 if fig is
                 canvas.figure and len(canvas.models) == 1 else None, fontweight="bold")


def make_figures(results: Path, folder: Path, analyse: dict | None = None, params: dict | None = None) -> list[Path]:
    """Every figure of every dataset, its models side by side; `analyse` (params.yaml's section) chooses the methods
    of each figure; `params` names each dataset's model where older tables have no `model` column."""
    style()
    tables = {name: read_table(results, name, params) for name in
              ("summary_budgets", "summary_exits", "grad_stats", "calibration", "per_exit", "operating_points", "runs")}
    styles = method_styles(sorted(tables["summary_exits"]["method"].unique()))  # one palette for the whole study
    paths = []
    for dataset in sorted(tables["summary_exits"]["dataset"].unique()):
        models = sorted(tables["summary_exits"].loc[tables["summary_exits"]["dataset"] == dataset, "model"].unique())
        available = sorted(tables["summary_exits"].loc[tables["summary_exits"]["dataset"] == dataset, "method"].unique())
        chosen = {kind: select(kind, available, analyse) for kind in CAPTIONS}
        canvases = {kind: Canvas(models) for kind in CAPTIONS}
        for index, model in enumerate(models):
            part = {name: frame[(frame["dataset"] == dataset) & (frame["model"] == model)] for name, frame in tables.items()}
            title, exits = label(dataset, model), part["summary_exits"]
            drawn = {"pareto": lambda m, c: figure_pareto(title, part["operating_points"], part["runs"], m, styles, c, index),
                     "exit_distribution": lambda m, c: figure_exit_distribution(title, part["summary_budgets"], m, styles,
                                                                                c, index),
                     "grad_norm": lambda m, c: figure_grad_norm(title, part["grad_stats"], m, styles, c, index),
                     "per_exit_accuracy": lambda m, c: figure_per_exit_accuracy(title, exits, m, styles, c, index),
                     "calibration": lambda m, c: figure_calibration(title, part["calibration"], exits, m, styles, c,
                                                                    index)}
            for kind, draw in drawn.items():
                shown = [m for m in chosen[kind] if m in set(exits["method"])]
                if shown and not (kind == "grad_norm" and part["grad_stats"].empty):  # nothing to show: no panels
                    draw(shown, canvases[kind])
        for kind, canvas in canvases.items():
            if canvas.figure is not None:
                paths += save(canvas.figure, folder, f"{kind}_{dataset}")
    return paths
