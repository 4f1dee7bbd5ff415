"""Per-exit gradient statistics: what each exit's loss term actually sends into the network.

For exit k's term L_k: the gradient norm into the shared backbone, into head k, and, from the gradient of
L_k w.r.t. exit k's logits (one row per sample), the number of samples whose row is non-zero (they carried
gradient) and the effective number of samples (Σ‖g_i‖)² / Σ‖g_i‖². Measured with autograd, not estimated.
"""

from __future__ import annotations

import torch

from bench.models import MultiExitNet


def grad_norm(grads) -> float:
    return float(torch.sqrt(sum((g.detach().pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))


def per_exit_gradient_stats(model: MultiExitNet, logits: list[torch.Tensor], exit_losses: torch.Tensor) -> list[dict]:
    backbone = [p for p in model.backbone_parameters() if p.requires_grad]
    rows = []
    for k, z in enumerate(logits):
        head = [p for p in model.heads[k].parameters() if p.requires_grad]
        if not exit_losses[k].requires_grad or not z.requires_grad:  # a frozen exit receives nothing
            grads = [None] * (1 + len(backbone) + len(head))
        else:
            grads = torch.autograd.grad(exit_losses[k], [z, *backbone, *head], retain_graph=True, allow_unused=True)
        per_sample = grads[0].detach().norm(dim=1) if grads[0] is not None else torch.zeros(len(z))
        total, squares = per_sample.sum(), per_sample.pow(2).sum()
        rows.append({
            "exit": k,
            "backbone_grad_norm": grad_norm(grads[1:1 + len(backbone)]),
            "head_grad_norm": grad_norm(grads[1 + len(backbone):]),
            "samples_with_grad": int((per_sample > 0).sum()),
            "effective_samples": float(total * total / squares) if squares > 0 else 0.0,
            "batch_size": len(z),
        })
    return rows
