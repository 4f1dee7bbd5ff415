"""Evaluate a trained run over a fixed grid of global thresholds (validation and test, reported apart)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.errors import BenchError
from bench.evaluate.policies import POLICIES, evaluate_policy, exit_indices
from bench.io import read_json


def evaluate_run(run_dir: Path, policies: list[str], thresholds: list[float]) -> dict:
    """The run's own summary (per-exit accuracy, exit costs, timing) plus one row per policy, split and
    threshold; the aggregate stage reads only these files."""
    for name in ("metrics.json", "logits.pt"):
        if not (run_dir / name).is_file():
            raise BenchError(f"{run_dir / name} is missing (the training run did not finish); "
                             "rerun its train stage with `dvc repro`")
    metrics = read_json(run_dir / "metrics.json")
    flops = metrics["exit_costs"]["flops"]
    logits = torch.load(run_dir / "logits.pt", weights_only=True)
    rows = []
    for policy in policies:
        score = POLICIES.get(policy, where="evaluate.policies")
        for split in ("val", "test"):
            scores = score(logits[split]["logits"])
            for t in thresholds:
                result = evaluate_policy(logits[split]["logits"], logits[split]["labels"],
                                         exit_indices(scores, t), flops)
                rows.append({**metrics["run"], "policy": policy, "threshold": t, "split": split, **result})
    run = {key: metrics[key] for key in ("run", "num_exits", "exit_costs", "per_exit", "time", "method")}
    return {"run": run, "rows": rows}
