"""Real early-exit inference: run block k and head k only for the samples still inside the network, so the
blocks after a sample's exit are never computed (what a deployed early-exit model does)."""

from __future__ import annotations

import torch

from bench.evaluate.policies import Policy, leaves
from bench.models import MultiExitNet


@torch.inference_mode()
def early_exit_predict(model: MultiExitNet, x: torch.Tensor, policy: Policy, thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions [N], exit index [N]) of a batch. After each exit the batch is compacted to the samples
    whose score missed that exit's threshold; the last exit takes the rest. Only policies that score each
    exit from its own logits (max-softmax, entropy) can decide without running deeper exits."""
    if policy.needs or policy.name not in PER_EXIT_POLICIES:
        raise ValueError(f"policy {policy.name!r} does not score each exit from its own logits alone")
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64).expand(model.num_exits - 1)
    n = x.shape[0]
    predictions = torch.empty(n, dtype=torch.long)
    exits = torch.empty(n, dtype=torch.long)
    inside = torch.arange(n)
    last = model.num_exits - 1
    for k in range(model.num_exits):
        x = model.blocks[k](x)
        logits = model.heads[k](x)
        if k == last:
            leave = torch.ones(len(inside), dtype=torch.bool)
        else:
            leave = leaves(policy.scores(logits.unsqueeze(0)), thresholds[k])[0]
        if leave.any():
            predictions[inside[leave]] = logits[leave].argmax(-1)
            exits[inside[leave]] = k
            if leave.all():
                break
            x, inside = x[~leave], inside[~leave]
    return predictions, exits


PER_EXIT_POLICIES = ("max_softmax", "entropy")
