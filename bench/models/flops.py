"""Per-exit cumulative inference cost, counted by torch's FlopCounterMode.

Cost of exit k = blocks 0..k + heads 0..k, per sample: an early-exit model evaluates every earlier head
before it moves on. FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matrix products
(bias additions, BN, activations and pooling are not counted); MACs = FLOPs / 2.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.models.multi_exit import MultiExitNet

UNIT = "FLOPs per sample (2 per multiply-add; conv + linear only)"
COUNTER = f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__})"


def exit_costs(model: MultiExitNet, sample_shape: tuple[int, ...],
               forward: Callable[[torch.Tensor, int], list] | None = None) -> dict:
    """Cumulative FLOPs and MACs of every exit for one sample of shape `sample_shape` (C, H, W).
    `forward(x, upto)` defaults to `model(x, upto=upto)`; methods that add modules pass their own."""
    forward = forward or (lambda x, upto: model(x, upto=upto))
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *sample_shape, device=next(model.parameters()).device)
    flops = []
    with torch.no_grad():  # not inference_mode: FlopCounterMode reports 0 there (pytorch#126268)
        for k in range(model.num_exits):
            with FlopCounterMode(display=False) as counter:
                forward(x, k)
            flops.append(int(counter.get_total_flops()))
    model.train(was_training)
    return {"flops": flops, "macs": [f // 2 for f in flops], "unit": UNIT, "macs_unit": "MACs per sample",
            "counter": COUNTER}
