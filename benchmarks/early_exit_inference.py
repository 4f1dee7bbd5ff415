"""Real early-exit inference on CPU: measured speed-up vs the FLOPs-predicted speed-up, per budget.

For a trained run (default: the study's Fashion-MNIST BranchyNet, seed 0) and the thresholds its tune stage
chose on validation for each budget, test images are classified by `early_exit_predict`, which runs the
blocks after a sample's exit for nobody. Baseline: the same network with no sample leaving early (every block
and every head, i.e. the deepest exit's cumulative FLOPs, the denominator of the FLOPs fraction).

    predicted speed-up = FLOPs(deepest exit) / expected FLOPs of the exits actually taken
    measured speed-up  = time(baseline) / time(early exit), on the same images, interleaved, medians

Batch 1 and small batches. Also prints each block's measured share of the time next to its share of the
FLOPs, which is where a shortfall comes from (fixed per-call costs weigh most on the cheap first block),
and the speed-up predicted from those measured block times instead of FLOPs ("by time").

    python benchmarks/early_exit_inference.py [RUN_DIR] [--images 1000] [--repeats 5] [--batches 1 8 32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from bench.data import load_prepared
from bench.evaluate.inference import PER_EXIT_POLICIES, early_exit_predict
from bench.evaluate.policies import POLICIES
from bench.io import read_json
from bench.models import build_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs" / "fashion_mnist" / "branchynet"
DEFAULT_RUN = next((p for p in (RUNS / "fmnist_cnn" / "seed0", RUNS / "seed0") if p.is_dir()), RUNS / "fmnist_cnn" / "seed0")


def load_run(run_dir: Path):
    metrics = read_json(run_dir / "metrics.json")
    settings = metrics["settings"]["dataset"]["model"]
    study = next(p for p in run_dir.resolve().parents if p.name == "results").parent  # <study>/results/runs/d/m/model/s
    data = load_prepared(metrics["run"]["dataset"], study / "datasets")
    test = data.splits["test"]
    model = build_model(settings["name"], test.batch(torch.arange(1)).shape[1], data.num_classes,
                        {k: v for k, v in settings.items() if k != "name"})
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True)["model"])
    return model.eval(), metrics, test


def timed(fn, batches) -> float:
    started = time.perf_counter()
    for x in batches:
        fn(x)
    return time.perf_counter() - started


def block_times(model, batches) -> list[float]:
    """Seconds spent in each block + its head when every sample runs the whole network."""
    seconds = [0.0] * model.num_exits
    with torch.inference_mode():
        for x in batches:
            for k in range(model.num_exits):
                started = time.perf_counter()
                x = model.blocks[k](x)
                model.heads[k](x)
                seconds[k] += time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = args.run_dir.resolve()
    model, metrics, test = load_run(run_dir)
    tuning = read_json(run_dir.parents[3] / "tune" / run_dir.relative_to(run_dir.parents[2]) / "tuning.json")
    policy_name = tuning["policy"]
    if policy_name not in PER_EXIT_POLICIES:
        raise SystemExit(f"{run_dir}: its policy {policy_name!r} needs more than each exit's logits")
    policy = POLICIES.get(policy_name)
    flops = metrics["exit_costs"]["flops"]
    images = test.batch(torch.arange(min(args.images, len(test))))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
          f"{args.threads} thread(s); run {run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir} "
          f"({policy_name}), {len(images)} test images, {args.repeats} interleaved repeats")
    print(f"cumulative FLOPs per exit ({metrics['exit_costs']['unit']}): {flops}")
    never = [float("inf")] * (model.num_exits - 1)
    for batch in args.batches:
        batches = list(images.split(batch))
        shares = block_times(model, batches)
        total = sum(shares)
        blocks = ", ".join(f"block+head {k}: {100 * s / total:.0f} % of time / "
                           f"{100 * (flops[k] - (flops[k - 1] if k else 0)) / flops[-1]:.0f} % of FLOPs"
                           for k, s in enumerate(shares))
        print(f"\nbatch {batch}: {blocks}")
        print(f"{'budget':>6} {'thresholds':>18} {'exit fractions':>20} {'predicted':>9} {'measured':>9} {'ratio':>6}"
              f" {'by time':>8} {'ratio':>6}")
        rows = [row for row in tuning["budgets"] if row.get("feasible") and row["calibrator"] == "optuna_per_exit"]
        for row in rows:
            thresholds = row["thresholds"]
            exits = torch.cat([early_exit_predict(model, x, policy, thresholds)[1] for x in batches])
            fractions = torch.bincount(exits, minlength=model.num_exits).double() / len(exits)
            predicted = flops[-1] / float((fractions * torch.tensor(flops, dtype=torch.float64)).sum())
            cumulative_time = torch.tensor(shares, dtype=torch.float64).cumsum(0)
            by_time = float(cumulative_time[-1] / (fractions * cumulative_time).sum())  # the same, with block times
            base, early = [], []
            for _ in range(args.repeats):
                base.append(timed(lambda x: early_exit_predict(model, x, policy, never), batches))
                early.append(timed(lambda x: early_exit_predict(model, x, policy, thresholds), batches))
            measured = statistics.median(base) / statistics.median(early)
            print(f"{row['budget']:>6} {' '.join(f'{t:.3f}' for t in thresholds):>18} "
                  f"{' '.join(f'{f:.2f}' for f in fractions.tolist()):>20} {predicted:>8.2f}× {measured:>8.2f}× "
                  f"{measured / predicted:>6.2f} {by_time:>7.2f}× {measured / by_time:>6.2f}")
        print(f"baseline (no early exit) median {1e3 * statistics.median(base) / len(images):.3f} ms per image")


if __name__ == "__main__":
    main()
