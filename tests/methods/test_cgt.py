"""HardCGT / SoftCGT on hand-made logits: gates, eligibility, weights, λ anneal, label smoothing, no
gradient through the gate (docs/methods.md §1.2–1.4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import StepContext, get_method
from methods._cgt import AUTHORS_LAMBDA_END, AUTHORS_LAMBDA_START, annealed_lambda, eligibility, interpolate_schedule

EPS = 1e-3
DEFAULT_START, DEFAULT_END = [1.0, 0.55, 0.1], [0.2, 0.65, 1.0]  # the authors' 4-exit schedule on 3 exits


def ctx(epoch=0, num_epochs=5):
    return StepContext(epoch=epoch, num_epochs=num_epochs, step=0, phase="joint")


def probs_logits(*rows):
    """Logits whose softmax is exactly the given probability rows (one [1, C] tensor per exit)."""
    return [torch.tensor([row], dtype=torch.float64).log().float() for row in rows]


def ce_ls(probs, y, eps=0.1):
    """Label-smoothed CE by hand: (1 − ε)·(−log p_y) + ε·mean_c(−log p_c)."""
    nll = [-math.log(p) for p in probs]
    return (1 - eps) * nll[y] + eps * sum(nll) / len(nll)


def hand_weights(lam, elig):
    raw = [l_ * e + EPS for l_, e in zip(lam, elig)]
    return [w / (sum(raw) + 1e-12) for w in raw]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- λ schedule

def test_default_lambda_schedule_is_the_authors_interpolated_onto_the_exits():
    assert interpolate_schedule(AUTHORS_LAMBDA_START, 4) == pytest.approx(list(AUTHORS_LAMBDA_START))
    assert interpolate_schedule(AUTHORS_LAMBDA_END, 4) == pytest.approx(list(AUTHORS_LAMBDA_END))
    for name in ("hard_cgt", "soft_cgt"):
        method = get_method(name)(None, 3, 3)
        assert method.lambda_start.tolist() == pytest.approx(DEFAULT_START)
        assert method.lambda_end.tolist() == pytest.approx(DEFAULT_END)
        assert method.metadata()["resolved"]["lambda_end"] == pytest.approx(DEFAULT_END)
        assert get_method(name)(None, 2, 3).lambda_start.tolist() == pytest.approx([1.0, 0.1])


def test_lambda_anneal_first_middle_last_epoch():
    start, end = torch.tensor(DEFAULT_START), torch.tensor(DEFAULT_END)
    assert annealed_lambda(start, end, 0, 5).tolist() == pytest.approx(DEFAULT_START)  # authors' epoch 1
    assert annealed_lambda(start, end, 2, 5).tolist() == pytest.approx([0.6, 0.6, 0.55])  # α = 1/2
    assert annealed_lambda(start, end, 4, 5).tolist() == pytest.approx(DEFAULT_END)  # authors' epoch T
    assert annealed_lambda(start, end, 0, 1).tolist() == pytest.approx(DEFAULT_START)  # T = 1: α = 0


def test_lambda_anneal_reaches_the_loss():
    """A sample wrong everywhere keeps λ at every exit, so its normalised weights follow the anneal."""
    method = get_method("hard_cgt")(None, 3, 3)
    probs = [0.2, 0.7, 0.1]  # wrong (argmax 1, label 0) at every exit
    logits = probs_logits(probs, probs, probs)
    y = torch.tensor([0])
    for epoch, lam in ((0, DEFAULT_START), (2, [0.6, 0.6, 0.55]), (4, DEFAULT_END)):
        losses = method.exit_losses(logits, y, ctx(epoch, 5))
        expected = [w * ce_ls(probs, 0) for w in hand_weights(lam, [1, 1, 1])]
        assert losses.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["hard_cgt", "soft_cgt"])
@pytest.mark.parametrize("key", ["lambda_start", "lambda_end"])
def test_explicit_lambda_lists_need_one_value_per_exit(name, key):
    with pytest.raises(BenchError, match=f"methods.{name}.{key} has 4 values; the model has 3 exits"):
        get_method(name)({key: [1.0, 0.7, 0.4, 0.1]}, 3, 10)
    with pytest.raises(BenchError, match=f"methods.{name}.{key} must be a list of numbers"):
        get_method(name)({key: [1.0, "a", 0.1]}, 3, 10)
    method = get_method(name)({key: [0.3, 0.2, 0.1]}, 3, 10)
    assert getattr(method, key).tolist() == pytest.approx([0.3, 0.2, 0.1])


# ---------------------------------------------------------------- HardCGT

def test_hard_solved_at_exit_1_leaves_deeper_exits_only_the_leak():
    method = get_method("hard_cgt")(None, 3, 3)
    p1, p2, p3 = [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.9, 0.05, 0.05]  # confident (0.8 ≥ 0.5) and correct at exit 1
    losses = method.exit_losses(probs_logits(p1, p2, p3), torch.tensor([0]), ctx(0))
    # by hand, epoch 0: λ = (1, 0.55, 0.1), elig = (1, 0, 0): raw W = (1.001, 0.001, 0.001), Σ = 1.003
    weights = [1.001 / 1.003, 0.001 / 1.003, 0.001 / 1.003]
    assert hand_weights(DEFAULT_START, [1, 0, 0]) == pytest.approx(weights)
    expected = [w * ce_ls(p, 0) for w, p in zip(weights, (p1, p2, p3))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_hard_wrong_everywhere_keeps_lambda_weights():
    method = get_method("hard_cgt")(None, 3, 3)
    p1, p2, p3 = [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.05, 0.05, 0.9]  # confident but wrong: not a success
    losses = method.exit_losses(probs_logits(p1, p2, p3), torch.tensor([0]), ctx(0))
    weights = [1.001 / 1.653, 0.551 / 1.653, 0.101 / 1.653]  # (λ + 0.001) / Σ, Σ = 1.653
    expected = [w * ce_ls(p, 0) for w, p in zip(weights, (p1, p2, p3))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_hard_success_needs_confidence_and_correctness_and_eligibility_is_a_product():
    method = get_method("hard_cgt")({"tau_train": 0.7}, 4, 3)
    y = torch.tensor([0, 0, 0, 0, 0])
    rows = [  # per exit, five samples
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]],
        [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]],
        [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.75, 0.2, 0.05], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]],
        [[0.9, 0.05, 0.05]] * 4 + [[0.9, 0.05, 0.05]],
    ]
    logits = [torch.tensor(r, dtype=torch.float64).log().float() for r in rows]
    gates = method.pass_through(logits, y)  # 1 − m
    assert gates.tolist() == [[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    assert eligibility(gates).tolist() == [[1, 0, 0, 0],  # solved at exit 1 (0.9 ≥ 0.7, correct)
                                           [1, 1, 0, 0],  # exit 1 correct but 0.6 < 0.7; solved at exit 2
                                           [1, 1, 1, 0],  # solved at exit 3
                                           [1, 1, 1, 1],  # never confident
                                           [1, 1, 1, 1]]  # wrong until the last exit (its own m is unused)
    conf = torch.softmax(logits[1][1:2], 1).max().item()  # the threshold is inclusive: conf ≥ tau succeeds
    assert get_method("hard_cgt")({"tau_train": conf}, 4, 3).pass_through(logits, y)[1, 1] == 0
    above = torch.nextafter(torch.tensor(conf), torch.tensor(2.0)).item()
    assert get_method("hard_cgt")({"tau_train": above}, 4, 3).pass_through(logits, y)[1, 1] == 1
    pass_through = torch.tensor([[0.5, 0.2, 0.9, 0.3]])
    assert eligibility(pass_through).tolist()[0] == pytest.approx([1.0, 0.5, 0.1, 0.09])


def test_label_smoothing_is_applied():
    probs = [0.2, 0.7, 0.1]
    logits = probs_logits(probs, probs, probs)
    y = torch.tensor([0])
    weights = hand_weights(DEFAULT_START, [1, 1, 1])
    smoothed = get_method("hard_cgt")(None, 3, 3).exit_losses(logits, y, ctx(0))
    plain = get_method("hard_cgt")({"label_smoothing": 0.0}, 3, 3).exit_losses(logits, y, ctx(0))
    assert smoothed.tolist() == pytest.approx([w * ce_ls(probs, 0, 0.1) for w in weights], rel=1e-5)
    assert plain.tolist() == pytest.approx([w * -math.log(0.2) for w in weights], rel=1e-5)
    assert not torch.allclose(smoothed, plain)


@pytest.mark.parametrize("name", ["hard_cgt", "soft_cgt"])
def test_gate_carries_no_gradient(name):
    """Autograd's gradient w.r.t. every exit's logits equals that of Σ_e mean_i W_e·CE_e with W held
    constant, and term e sends gradient into exit e's logits only."""
    params = {"tau_train": 0.4, **({"sigmoid_scale": 20.0} if name == "soft_cgt" else {})}
    method = get_method(name)(params, 3, 5)
    gen = torch.Generator().manual_seed(0)
    logits = [(3 * torch.randn(64, 5, generator=gen)).requires_grad_() for _ in range(3)]
    y = torch.randint(0, 5, (64,), generator=gen)
    losses = method.exit_losses(logits, y, ctx(1, 4))
    grads = torch.autograd.grad(losses.sum(), logits, retain_graph=True)

    with torch.no_grad():  # the weights by hand, as constants
        z = [t.detach() for t in logits]
        if name == "hard_cgt":
            gate = [1.0 - ((F.softmax(t, 1).max(1).values >= 0.4) & (t.argmax(1) == y)).float() for t in z]
        else:
            gate = [1.0 - torch.sigmoid((F.softmax(t, 1).gather(1, y[:, None])[:, 0] - 0.4) * 20.0) for t in z]
        lam = annealed_lambda(torch.tensor(DEFAULT_START), torch.tensor(DEFAULT_END), 1, 4)
        elig = [torch.ones(64), gate[0], gate[0] * gate[1]]
        raw = torch.stack([lam[e] * elig[e] + EPS for e in range(3)], 1)
        weights = raw / (raw.sum(1, keepdim=True) + 1e-12)
        if name == "hard_cgt":
            assert 0 < (elig[1] == 0).sum() < 64  # the gate does bite in this batch
        else:
            assert elig[1].min() < 0.05 and elig[1].max() > 0.95
    const = [t.detach().clone().requires_grad_() for t in z]
    reference = sum((weights[:, e] * F.cross_entropy(const[e], y, reduction="none", label_smoothing=0.1)).mean()
                    for e in range(3))
    ref_grads = torch.autograd.grad(reference, const)
    assert losses.sum().item() == pytest.approx(reference.item(), rel=1e-6)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-7), (g - r).abs().max()
    for e in range(3):
        per_term = torch.autograd.grad(losses[e], logits, retain_graph=True, allow_unused=True)
        for k, g in enumerate(per_term):
            assert (g is None or not g.any()) if k != e else g.abs().sum() > 0


# ---------------------------------------------------------------- SoftCGT

def test_soft_weights_follow_the_sigmoid_residual():
    method = get_method("soft_cgt")(None, 3, 3)
    p1, p2, p3 = [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.95, 0.03, 0.02]  # s = p(true class 0) = 0.6, 0.3, 0.95
    logits, y = probs_logits(p1, p2, p3), torch.tensor([0])
    r1, r2 = 1 - sigmoid(0.6 - 0.9), 1 - sigmoid(0.3 - 0.9)
    assert (r1, r2) == pytest.approx((0.5744425168, 0.6456563062))
    assert method.pass_through(logits, y)[0, :2].tolist() == pytest.approx([r1, r2], rel=1e-6)
    weights = hand_weights(DEFAULT_START, [1.0, r1, r1 * r2])
    losses = method.exit_losses(logits, y, ctx(0))
    assert losses.tolist() == pytest.approx([w * ce_ls(p, 0) for w, p in zip(weights, (p1, p2, p3))], rel=1e-5)


def test_soft_gate_with_scale_1_is_mild():
    method = get_method("soft_cgt")(None, 2, 3)
    sure = [torch.tensor([[50.0, 0.0, 0.0]] * 2)] * 2  # s ≈ 1 for label 0, s ≈ 0 for label 1
    r = method.pass_through(sure, torch.tensor([0, 1]))[:, 0]
    assert r.tolist() == pytest.approx([1 - sigmoid(0.1), 1 - sigmoid(-0.9)], abs=1e-6)
    assert r.tolist() == pytest.approx([0.475, 0.711], abs=1e-3)
    gen = torch.Generator().manual_seed(1)
    r = method.pass_through([4 * torch.randn(256, 3, generator=gen)] * 2, torch.randint(0, 3, (256,), generator=gen))
    assert r.min() >= 0.475 - 1e-6 and r.max() <= 0.711 + 1e-6
    sharp = get_method("soft_cgt")({"sigmoid_scale": 20.0}, 2, 3).pass_through(sure, torch.tensor([0, 1]))[:, 0]
    assert sharp.tolist() == pytest.approx([1 - sigmoid(2.0), 1 - sigmoid(-18.0)], abs=1e-6)
