"""JEI-DNN (methods/jei_dnn.py) on hand-computed examples: gate features, oracle exit and targets, positive-class
weights, exit probabilities, which parameters each kind of step trains, and the alternation schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.models import build_model
from bench.train.method import StepContext, get_method
from methods.jei_dnn import (BILEVEL, CLASSIFIER, GATE, WARMUP, bilevel_step_kind, exit_probabilities, gate_targets,
                             oracle_exit, positive_weights, uncertainty_features, warmup_epochs)

LN2 = math.log(2.0)


def ctx(phase, step, extra=None):
    return StepContext(epoch=0, num_epochs=6, step=step, phase=phase, extra=extra)


def test_uncertainty_features_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]])).requires_grad_(True)
    features = uncertainty_features(logits)
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2; p²/Σp² = (2/3, 1/6, 1/6), H = (2/3) ln(3/2) + (1/3) ln 6
    first = [0.5, 1.5 * LN2, 0.25, (2 / 3) * math.log(1.5) + (1 / 3) * math.log(6.0)]
    # one-hot p: 0·log 0 = 0, margin 1
    assert torch.allclose(features, torch.tensor([first, [1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert not features.requires_grad  # detached: gates never send gradient into the network


@pytest.mark.parametrize("cost_weight, expected", [(0.7, [0, 1, 2]), (0.0, [2, 2, 2]), (5.0, [0, 1, 0])])
def test_oracle_exit_by_hand(cost_weight, expected):
    ce = torch.tensor([[0.1, 2.0, 2.0],  # exit 0, samples A, B, C
                       [0.05, 0.3, 1.5],  # exit 1
                       [0.0, 0.2, 0.1]])  # exit 2 (cost 1)
    # λ = 0.7: A 0.275 / 0.4 / 0.7 → 0; B 2.175 / 0.65 / 0.9 → 1; C 2.175 / 1.85 / 0.8 → 2
    assert oracle_exit(ce, [0.25, 0.5, 1.0], cost_weight).tolist() == expected


def test_gate_targets_are_exit_subsequent():
    assert gate_targets(torch.tensor([0, 1, 2]), 3).tolist() == [[1, 0, 0], [1, 1, 0]]
    assert gate_targets(torch.tensor([3, 1]), 4).tolist() == [[0, 0], [0, 1], [0, 1]]


def test_positive_weights_from_histogram():
    hist = lambda *counts: torch.cat([torch.full((n,), exit_) for exit_, n in enumerate(counts)])  # noqa: E731
    assert torch.allclose(positive_weights(hist(6, 2, 2), 2), torch.tensor([4 / 6, 8 / 2]))
    assert torch.allclose(positive_weights(hist(2, 1, 7), 2), torch.tensor([8 / 2, 5.0]))  # 9 capped at 5
    assert torch.allclose(positive_weights(hist(0, 0, 10), 2), torch.tensor([5.0, 5.0]))  # none: count 0.1 → 99 → 5
    assert torch.allclose(positive_weights(hist(5, 5, 0, 0), 3), torch.tensor([1.0, 1.0, 5.0]))


def test_exit_probabilities_by_hand():
    g = torch.tensor([[0.3, 0.8, 0.1],  # gate 0, three samples
                      [0.6, 0.5, 0.2],
                      [0.5, 0.2, 0.3]], dtype=torch.float64)
    P, c = exit_probabilities(g)
    assert torch.allclose(P, torch.tensor([[0.3, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.0, 0.3]], dtype=torch.float64))
    # c_1 = P_1 / (1 − c_0); c_2 = P_2 / ((1 − c_0)(1 − c_1)); sample 2 left surely at gate 1, 0/0 → 1
    expected = [[0.3, 0.8, 0.1], [0.6 / 0.7, 1.0, 0.2 / 0.9], [1.0, 1.0, 0.3 / (0.9 * (1 - 0.2 / 0.9))]]
    assert torch.allclose(c, torch.tensor(expected, dtype=torch.float64))


def test_eval_outputs_from_gate_biases():
    method = get_method("jei_dnn")(None, 4, 5)
    gates = method.extra_modules()
    with torch.no_grad():
        for gate, prob in zip(gates, [0.3, 0.6, 0.5]):
            gate.weight.zero_()
            gate.bias.fill_(math.log(prob / (1 - prob)))
        out = method.eval_outputs(gates, torch.randn(4, 7, 5))
    assert set(out) == {"gate_exit_prob", "gate_prob"} and out["gate_exit_prob"].shape == (4, 7)
    assert torch.allclose(out["gate_prob"], torch.tensor([0.3, 0.6, 0.5, 1.0]).view(4, 1).expand(4, 7))
    assert torch.allclose(out["gate_exit_prob"], torch.tensor([0.3, 0.6 / 0.7, 1.0, 1.0]).view(4, 1).expand(4, 7),
                          atol=1e-5)
    with torch.no_grad():  # gate l reads exit l's features: weight 1 on p_max gives g_l = σ(p_max of exit l)
        for gate in gates:
            gate.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
            gate.bias.zero_()
        logits = torch.randn(4, 7, 5)
        out = method.eval_outputs(gates, logits)
    assert torch.allclose(out["gate_prob"][:3], torch.sigmoid(logits[:3].softmax(-1).amax(-1)))


def confident_logits(correct_upto):
    """Logits [3, N, 2] for label 0: sample n is right (CE ≈ 0) at exits ≥ correct_upto[n], wrong (CE 20) before."""
    right, wrong = torch.tensor([10.0, -10.0]), torch.tensor([-10.0, 10.0])
    return torch.stack([torch.stack([right if k >= first else wrong for first in correct_upto]) for k in range(3)])


def test_epoch_end_refits_weights_and_gate_loss_uses_them():
    method = get_method("jei_dnn")(None, 3, 2)  # cost fractions 1/3, 2/3, 1; λ = 0.7
    gates = method.extra_modules()
    assert gates.pos_weight.tolist() == [1.0, 1.0]  # the code's initial ratios
    logits = confident_logits([0] * 6 + [1] * 2 + [2] * 2)  # oracle exits: six at 0, two at 1, two at 2
    labels = torch.zeros(10, dtype=torch.long)
    method.epoch_end(gates, logits, labels, ctx(BILEVEL, 0))
    assert torch.allclose(gates.pos_weight, torch.tensor([4 / 6, 4.0]))
    with torch.no_grad():
        for gate in gates:
            gate.weight.zero_()
            gate.bias.zero_()  # gate logit 0: BCE = ln 2 for either target
    losses = method.exit_losses(list(logits), labels, ctx(BILEVEL, 0, gates))
    # gate 0: six 1-targets × 2/3 + four 0-targets; gate 1: eight 1-targets × 4 + two 0-targets; mean over 20
    assert torch.allclose(losses, torch.tensor([8 * LN2 / 20, 34 * LN2 / 20, 0.0]), atol=1e-6)


def test_warmup_epochs_do_not_refit_and_the_first_bilevel_epoch_uses_one():
    """As the authors' code: set_from_validation runs after bi-level epochs only, so the warm-up leaves every
    positive-class weight at 1.0 and the first bi-level epoch's gate loss is the unweighted BCE."""
    method = get_method("jei_dnn")(None, 3, 2)
    gates = method.extra_modules()
    logits = confident_logits([0] * 6 + [1] * 2 + [2] * 2)  # a fit would give [2/3, 4]
    labels = torch.zeros(10, dtype=torch.long)
    for epoch in range(2):
        method.epoch_end(gates, logits, labels, ctx(WARMUP, epoch))
    assert gates.pos_weight.tolist() == [1.0, 1.0]
    with torch.no_grad():
        for gate in gates:
            gate.weight.zero_()
            gate.bias.zero_()
    losses = method.exit_losses(list(logits), labels, ctx(BILEVEL, 0, gates))
    # unweighted: gate 0 and gate 1 each 10 BCEs of ln 2, mean over 20
    assert torch.allclose(losses, torch.tensor([10 * LN2 / 20, 10 * LN2 / 20, 0.0]), atol=1e-6)
    method.epoch_end(gates, logits, labels, ctx(BILEVEL, 0))
    assert torch.allclose(gates.pos_weight, torch.tensor([4 / 6, 4.0]))


def grads_after(method, model, gates, phase, step):
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    for p in [*model.parameters(), *gates.parameters()]:
        p.grad = None
    logits = method.forward(model, gates, x)
    losses = method.exit_losses(logits, y, ctx(phase, step, gates))
    losses.sum().backward()
    return losses, logits, y


def test_gate_steps_train_only_gates_and_classifier_steps_only_the_network():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method("jei_dnn")({"bilevel_batch_count": 3}, model.num_exits, 4)
    gates = method.extra_modules()

    grads_after(method, model, gates, BILEVEL, 10)  # first bi-level step: GATE
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates.parameters())

    losses, logits, y = grads_after(method, model, gates, BILEVEL, 13)  # 3 steps later: CLASSIFIER
    assert all(p.grad is None for p in gates.parameters())
    assert all(any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()) for head in model.heads)
    ce = torch.stack([F.cross_entropy(z, y) for z in logits])
    assert torch.allclose(losses, ce / 3)  # plain mean CE over the three exits

    losses, logits, y = grads_after(method, model, gates, WARMUP, 0)
    assert all(p.grad is None for p in gates.parameters())
    ce = torch.stack([F.cross_entropy(z, y) for z in logits])
    assert torch.allclose(losses, ce * torch.tensor([3.0, 2.0, 1.0]))  # G = 2: (G+1−l) = 3, 2; final 1


def test_alternation_schedule_by_step():
    assert [bilevel_step_kind(s, 50) for s in (0, 49, 50, 99, 100, 149, 150)] == \
        [GATE, GATE, CLASSIFIER, CLASSIFIER, GATE, GATE, CLASSIFIER]
    method = get_method("jei_dnn")({"bilevel_batch_count": 2}, 3, 4)
    assert method.step_kind(ctx(WARMUP, 0)) == WARMUP
    # counted from the first bi-level step (here step 7), not from the start of each epoch
    assert [method.step_kind(ctx(BILEVEL, s)) for s in range(7, 14)] == \
        [GATE, GATE, CLASSIFIER, CLASSIFIER, GATE, GATE, CLASSIFIER]


def test_warmup_length_and_phases():
    assert [warmup_epochs(e, 0.3) for e in (1, 2, 3, 5, 6, 20)] == [0, 1, 1, 2, 2, 6]
    assert warmup_epochs(4, 0.0) == 1 and warmup_epochs(4, 0.99) == 3
    method = get_method("jei_dnn")(None, 3, 4)
    assert [(p.name, p.epochs) for p in method.phases(5)] == [(WARMUP, 2), (BILEVEL, 3)]
    assert [(p.name, p.epochs) for p in method.phases(1)] == [(BILEVEL, 1)]


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(BenchError, match="warmup_fraction must be in"):
        get_method("jei_dnn")({"warmup_fraction": 1.0}, 3, 4)
    with pytest.raises(BenchError, match="at least 2 exits"):
        get_method("jei_dnn")(None, 1, 4)
