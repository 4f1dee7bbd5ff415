"""Per-exit FLOPs: FlopCounterMode counts against closed-form conv/linear counts, exactly."""

import pytest
import torch
from torch import nn

from bench.models import MODELS, build_model, exit_costs, input_shape


def fmnist_closed_form(a, b, c, h, classes=10):
    """fmnist_cnn(widths=(a, b, c), head_width=h), one conv per block, on 28×28: 2 FLOPs per MAC."""
    block = [2 * 28 * 28 * 9 * 1 * a, 2 * 14 * 14 * 9 * a * b, 2 * 7 * 7 * 9 * b * c]
    head = [2 * 7 * 7 * 9 * a * h + 2 * h * classes,  # strided conv 14→7, then linear
            2 * 4 * 4 * 9 * b * h + 2 * h * classes,  # strided conv 7→4
            2 * c * classes]  # last exit: pool → linear
    out, total = [], 0
    for k in range(3):
        total += block[k] + head[k]
        out.append(total)
    return out


def spectral_closed_form(bands, stem, a, b, c, h, p, classes=16):
    """spectral_spatial_cnn on bands × p × p patches (no pooling; heads' strided conv gives ceil(p/2))."""
    q, s = p * p, ((p + 1) // 2) ** 2
    block = [2 * q * bands * stem + 2 * q * 9 * stem * a, 2 * q * 9 * a * b, 2 * q * 9 * b * c]
    head = [2 * s * 9 * a * h + 2 * h * classes, 2 * s * 9 * b * h + 2 * h * classes, 2 * c * classes]
    out, total = [], 0
    for k in range(3):
        total += block[k] + head[k]
        out.append(total)
    return out


def test_fmnist_cnn_matches_closed_form():
    model = build_model("fmnist_cnn", 1, 10, {"widths": [32, 64, 128], "head_width": 64})
    costs = exit_costs(model, (1, 28, 28))
    assert costs["flops"] == fmnist_closed_form(32, 64, 128, 64)
    assert costs["macs"] == [f // 2 for f in costs["flops"]]
    assert "FLOPs" in costs["unit"] and "FlopCounterMode" in costs["counter"]


@pytest.mark.parametrize("patch", [5, 7])
def test_spectral_spatial_cnn_matches_closed_form(patch):
    model = build_model("spectral_spatial_cnn", 200, 16, {"widths": [64, 96, 128], "head_width": 64,
                                                           "spectral_stem": 64})
    assert exit_costs(model, (200, patch, patch))["flops"] == spectral_closed_form(200, 64, 64, 96, 128, 64, patch)


def hook_count(model, sample_shape, upto):
    """Reference counter independent of FlopCounterMode: forward hooks with the textbook formulas."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *sample_shape), upto=upto)
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_counts_match_hook_reference(name):
    """On a sample of the shape the model registry states (3 channels and 7×7 where it accepts any)."""
    shape = tuple(fill if d is None else d for d, fill in zip(input_shape(name), (3, 7, 7)))
    model = build_model(name, shape[0], 5, {})
    costs = exit_costs(model, shape)
    assert model.num_exits >= 2  # tiny_mlp has 2 exits, the others 3 or more
    assert costs["flops"] == [hook_count(model, shape, k) for k in range(model.num_exits)]
    assert costs["flops"] == sorted(costs["flops"]) and len(set(costs["flops"])) == model.num_exits


def test_forward_upto_runs_only_the_first_blocks():
    model = build_model("tiny_cnn", 1, 4, {})
    x = torch.randn(3, 1, 8, 8)
    full = model(x)
    assert len(full) == 3 and all(z.shape == (3, 4) for z in full)
    model.eval()
    partial = model(x, upto=1)
    assert len(partial) == 2
    assert torch.equal(partial[1], model(x)[1])
