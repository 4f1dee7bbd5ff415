"""Numeric checks of the classic loss-only methods (sdn, pabee_weighted, self_distill, cascade_aware) on hand-made logits."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import StepContext, get_method


def ctx(epoch=0, num_epochs=10):
    return StepContext(epoch=epoch, num_epochs=num_epochs, step=0, phase="joint")


def ce(z, y):  # hand-computed CE: −log softmax(z)[y], batch mean
    return float(sum(-(row[t] - torch.logsumexp(row, 0)) for row, t in zip(z, y)) / len(y))


LOGITS = [torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]]),
          torch.tensor([[3.0, -1.0, 0.0], [0.0, 0.0, 4.0]])]
TARGETS = torch.tensor([0, 2])
CES = torch.tensor([ce(z, TARGETS) for z in LOGITS])


@pytest.mark.parametrize("epoch, expected", [
    (0, [0.01 + 0.2 / 10, 0.01 + 0.6 / 10]),      # first epoch: t = 1
    (4, [0.01 + 5 * 0.2 / 10, 0.01 + 5 * 0.6 / 10]),  # middle: t = 5
    (9, [0.2, 0.6]),                              # last epoch: min(C, 0.01 + C) = C
])
def test_sdn_schedule_follows_cost_fractions(epoch, expected):
    method = get_method("sdn")(None, 3, 3)
    method.cost_fractions = [0.2, 0.6, 1.0]
    losses = method.exit_losses(LOGITS, TARGETS, ctx(epoch, 10))
    assert torch.allclose(losses, torch.tensor(expected + [1.0]) * CES, atol=1e-6)


def test_sdn_cap_bites_before_the_last_epoch_for_a_small_cost():
    method = get_method("sdn")(None, 3, 3)
    method.cost_fractions = [0.02, 0.6, 1.0]
    epoch, expected = 6, [0.02, 0.01 + 7 * 0.6 / 10]  # t = 7: 0.01 + 0.014 = 0.024 > C = 0.02, capped; 0.43 < 0.6
    losses = method.exit_losses(LOGITS, TARGETS, ctx(epoch, 10))
    assert torch.allclose(losses, torch.tensor(expected + [1.0]) * CES, atol=1e-6)


def test_sdn_weights_are_capped_and_max_weights_override():
    method = get_method("sdn")({"max_weights": [0.3, 0.5]}, 3, 3)
    assert torch.allclose(method.ic_weights(9, 10), torch.tensor([0.3, 0.5]))
    # t = 8 of 10: 0.01 + 8·0.3/10 = 0.25 < 0.3, 0.01 + 8·0.5/10 = 0.41 < 0.5; t = 10 of 9 (past T): capped at C
    assert torch.allclose(method.ic_weights(7, 10), torch.tensor([0.25, 0.41]))
    assert torch.allclose(method.ic_weights(9, 9), torch.tensor([0.3, 0.5]))
    assert torch.allclose(get_method("sdn")({"max_weights": [0.4]}, 3, 3).ic_weights(0, 4), torch.tensor([0.11, 0.11]))
    with pytest.raises(BenchError, match="max_weights must be"):
        get_method("sdn")({"max_weights": [0.1, 0.2, 0.3]}, 3, 3)


def test_pabee_weighted_terms_are_j_ce_over_sum_j():
    losses = get_method("pabee_weighted")(None, 3, 3).exit_losses(LOGITS, TARGETS, ctx())
    assert torch.allclose(losses, torch.tensor([1 * CES[0], 2 * CES[1], 3 * CES[2]]) / 6, atol=1e-6)


def soft_ce(z, p):
    return float(sum(-(q * (row - torch.logsumexp(row, 0))).sum() for row, q in zip(z, p)) / len(z))


@pytest.mark.parametrize("aux_weight, temperature", [(1.0, 1.0), (0.5, 2.0)])
def test_self_distill_terms(aux_weight, temperature):
    method = get_method("self_distill")({"aux_weight": aux_weight, "temperature": temperature}, 3, 3)
    losses = method.exit_losses(LOGITS, TARGETS, ctx())
    teacher = [[math.exp(v / temperature) for v in row] for row in LOGITS[2].tolist()]
    teacher = torch.tensor([[v / sum(row) for v in row] for row in teacher])
    expected = [CES[k] / 3 + aux_weight / 2 * soft_ce(LOGITS[k], teacher) for k in range(2)] + [CES[2] / 3]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)


def test_self_distill_sends_no_gradient_into_the_teacher():
    logits = [z.clone().requires_grad_(True) for z in LOGITS]
    get_method("self_distill")({"aux_weight": 3.0}, 3, 3).exit_losses(logits, TARGETS, ctx()).sum().backward()
    deep = LOGITS[2].clone().requires_grad_(True)
    (F.cross_entropy(deep, TARGETS) / 3).backward()
    assert torch.allclose(logits[2].grad, deep.grad)  # only its own CE/K: nothing through the teacher
    assert logits[0].grad.abs().sum() > 0


def test_cascade_aware_weights():
    # 4 samples, label 0: exit 0 right / only deepest right / neither right / exit 0 right but deepest wrong
    right, wrong = [5.0, 0.0], [0.0, 5.0]
    shallow = torch.tensor([right, wrong, wrong, right])
    middle = torch.tensor([wrong, right, wrong, wrong])
    deep = torch.tensor([right, right, wrong, wrong])
    y = torch.zeros(4, dtype=torch.long)
    method = get_method("cascade_aware")({"downweight": 0.1, "neither_weight": 0.5}, 3, 2)
    w = method.sample_weights([shallow, middle, deep], y)
    assert torch.equal(w, torch.tensor([[1.0, 0.1, 0.5, 1.0], [0.1, 1.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]))
    losses = method.exit_losses([shallow, middle, deep], y, ctx())
    per = torch.stack([F.cross_entropy(z, y, reduction="none") for z in (shallow, middle, deep)])
    assert torch.allclose(losses, (w * per).mean(dim=1) / 3)
    assert losses[0] < per[0].mean() / 3  # the down-weighting changed the term


def test_cascade_aware_without_downweighting_is_joint():
    method = get_method("cascade_aware")({"downweight": 1.0}, 3, 3)
    assert torch.allclose(method.exit_losses(LOGITS, TARGETS, ctx()), CES / 3, atol=1e-6)
    default = get_method("cascade_aware")(None, 3, 3).sample_weights(LOGITS, TARGETS)
    # the deepest gets both right; exit 0 gets only sample 0 right, exit 1 only sample 1
    assert torch.equal(default, torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 1.0]]))
