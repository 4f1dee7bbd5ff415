"""Evaluate a trained run over a fixed grid of global thresholds (validation and test, reported apart)."""

from __future__ import annotations

from pathlib import Path

from bench.analyse.stats import calibration_bins
from bench.errors import BenchError
from bench.evaluate.policies import POLICIES, evaluate_policy, exit_indices
from bench.artefacts import regenerate
from bench.io import load_torch, read_csv, read_json


def read_run_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json (status "ok", with logits.pt beside it) or its failure record."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise BenchError(f"{path} is missing (the training run did not finish); train it again with `dvc repro` (its runs@<dataset>-<method> stage) or `eebench train`")
    metrics = read_json(path, regenerate(path))
    if not isinstance(metrics, dict):
        raise BenchError(f"{path} is not a run record (a JSON object); {regenerate(path)}")
    if metrics.get("status") != "failed" and not (run_dir / "logits.pt").is_file():
        raise BenchError(f"{run_dir / 'logits.pt'} is missing; train {run_dir} again with `dvc repro` or `eebench train`")
    return metrics


def load_logits(run_dir: Path) -> dict:
    """A finished run's logits.pt ({split: {"logits", "labels", "extras"}}); a damaged one names the fix."""
    path = run_dir / "logits.pt"
    logits = load_torch(path, regenerate(path))
    if not isinstance(logits, dict) or any(not isinstance(logits.get(s), dict) for s in ("val", "test")):
        raise BenchError(f"{path} does not hold the val and test logits of a run; {regenerate(path)}")
    return logits


def run_record(metrics: dict, model: str | None) -> dict:
    """The run's key (dataset, model, method, seed) for its rows: the record's own, the model given by the caller
    where a record (from before models were a grid axis) does not name it."""
    run = metrics["run"]
    return {"dataset": run["dataset"], "model": run.get("model", model), "method": run["method"], "seed": run["seed"]}


def evaluate_run(run_dir: Path, policies: list[str], thresholds: list[float], model: str | None = None) -> dict:
    """The run's own summary (per-exit accuracy, exit costs, timing) plus one row per policy, split and
    threshold; the aggregate stage reads only these files. `thresholds` are positions in each policy's
    threshold range (0 → low, 1 → high): for max_softmax and entropy that is the threshold itself.
    Policies that need outputs the method does not produce (learned gates) are listed as skipped."""
    metrics = read_run_metrics(run_dir)
    if metrics.get("status") == "failed":
        return {"status": "failed", "run": run_record(metrics, model), "reason": metrics["reason"]}
    flops = metrics["exit_costs"]["flops"]
    logits = load_logits(run_dir)
    own = metrics["method"]["exit_policy"]
    rows, skipped = [], []
    for name in dict.fromkeys([*policies, own]):  # the configured policies plus the method's own
        policy = POLICIES.get(name, where="evaluate.policies")
        if any(key not in logits["val"].get("extras", {}) for key in policy.needs):
            skipped.append(name)
            continue
        for split in ("val", "test"):
            scores = policy.scores(logits[split]["logits"], logits[split].get("extras"))
            for position in thresholds:
                t = policy.low + position * (policy.high - policy.low)
                t = float(round(t)) if policy.integer else t
                result = evaluate_policy(logits[split]["logits"], logits[split]["labels"],
                                         exit_indices(scores, t), flops)
                rows.append({**run_record(metrics, model), "policy": name, "own_policy": name == own, "threshold": t,
                             "split": split, **result})
    run = {key: metrics[key] for key in ("run", "num_exits", "exit_costs", "per_exit", "time", "method", "data",
                                         "settings", "environment")}
    test = logits["test"]
    probs = test["logits"].softmax(-1)
    calibration = [calibration_bins(probs[k].amax(-1).numpy(), (probs[k].argmax(-1) == test["labels"]).numpy())
                   for k in range(probs.shape[0])]
    path = run_dir / "grad_stats.csv"
    empty = path.read_bytes() == b"\n"  # what write_csv writes for a run too short for one measurement
    grad_stats = [] if empty else read_csv(path, regenerate(path)).to_dict("records")
    return {"status": "ok", "run": run, "rows": rows, "skipped_policies": skipped, "calibration": calibration,
            "grad_stats": grad_stats}
