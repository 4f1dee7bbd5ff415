"""Per-exit gradient statistics are real autograd quantities."""

import torch
import torch.nn.functional as F

from bench.models import build_model
from bench.train.gradstats import per_exit_gradient_stats


def test_counts_samples_that_carry_gradient_and_norms_match_autograd():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    x, y = torch.randn(10, 1, 8, 8), torch.arange(10) % 4
    logits = model(x)
    mask = torch.tensor([1.0] * 3 + [0.0] * 7)  # exit 1 learns from 3 samples only
    losses = torch.stack([F.cross_entropy(logits[0], y),
                          (mask * F.cross_entropy(logits[1], y, reduction="none")).mean(),
                          0.0 * logits[2].sum()])
    rows = per_exit_gradient_stats(model, logits, losses)
    assert [r["samples_with_grad"] for r in rows] == [10, 3, 0]
    assert abs(rows[1]["effective_samples"] - 3) < 1.0
    assert rows[2]["backbone_grad_norm"] == 0.0 and rows[2]["head_grad_norm"] == 0.0

    grads = torch.autograd.grad(losses[1], list(model.blocks.parameters()), retain_graph=True, allow_unused=True)
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None))
    assert abs(rows[1]["backbone_grad_norm"] - float(expected)) < 1e-6
    later_block = torch.autograd.grad(losses[0], list(model.blocks[2].parameters()), retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in later_block)  # exit 0's loss never reaches block 2
    losses.sum().backward()  # the graph survives the measurement
