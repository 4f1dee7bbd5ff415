"""Training regimes with phases (disjoint, mixed, cascade_opt) and class-aware exits (classynet)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.models import build_model
from bench.train.method import StepContext, all_parameters, get_method
from methods.disjoint import split_epochs

BLOCKS = {"blocks.0", "blocks.1", "blocks.2"}
HEADS = {"heads.0", "heads.1", "heads.2"}


def ctx(phase, extra=None):
    return StepContext(epoch=0, num_epochs=6, step=0, phase=phase, extra=extra)


def one_step(name, phase_name, params=None, epochs=6):
    """One backward pass in the named phase, the engine's freezing applied. Returns the per-exit losses, the
    modules ("blocks.1", "heads.0", ...) whose parameters got non-zero gradient (checked against the modules
    the phase trains), the logits and the targets."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method(name)(params, model.num_exits, 4)
    extra = method.extra_modules()
    phase = {p.name: p for p in method.phases(epochs)}[phase_name]
    chosen = {id(p) for p in phase.trainable(model, extra)}
    for p in all_parameters(model, extra):
        p.requires_grad_(id(p) in chosen)
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    logits = model(x)
    losses = method.exit_losses(logits, y, ctx(phase_name, extra))
    losses.sum().backward()
    touched = {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if id(p) in chosen}
    return losses.detach(), touched, logits, y


@pytest.mark.parametrize("epochs,fraction,expected", [
    (1, 0.5, [1, 0]), (2, 0.5, [1, 1]), (3, 0.5, [2, 1]), (4, 0.5, [2, 2]), (5, 0.5, [3, 2]), (6, 0.5, [3, 3]),
    (5, 0.1, [1, 4]), (2, 0.9, [1, 1]), (10, 0.99, [9, 1]), (10, 0.3, [3, 7])])
def test_two_phase_epoch_split(epochs, fraction, expected):
    assert split_epochs(epochs, fraction, "x") == expected
    for name, second in (("disjoint", "heads"), ("mixed", "joint")):
        phases = get_method(name)({"backbone_fraction": fraction}, 3, 4).phases(epochs)
        assert [(p.name, p.epochs) for p in phases] == [("backbone", expected[0]), (second, expected[1])][:1 + (epochs > 1)]


@pytest.mark.parametrize("name", ["disjoint", "mixed"])
def test_backbone_fraction_must_be_a_fraction(name):
    with pytest.raises(BenchError, match=f"methods.{name}.backbone_fraction must be in"):
        get_method(name)({"backbone_fraction": 1.0}, 3, 4)


@pytest.mark.parametrize("name", ["disjoint", "mixed"])
def test_backbone_phase_trains_blocks_and_final_head_on_final_exit_only(name):
    losses, touched, logits, y = one_step(name, "backbone")
    assert touched == BLOCKS | {"heads.2"}
    assert losses[0] == 0 and losses[1] == 0
    assert torch.allclose(losses[2], F.cross_entropy(logits[2].detach(), y))


def test_disjoint_heads_phase_freezes_backbone_and_final_head():
    losses, touched, logits, y = one_step("disjoint", "heads")
    assert touched == {"heads.0", "heads.1"}
    assert losses[2] == 0
    assert torch.allclose(losses[:2], torch.stack([F.cross_entropy(z.detach(), y) for z in logits[:2]]))


def test_mixed_joint_phase_trains_everything_with_the_joint_loss():
    losses, touched, logits, y = one_step("mixed", "joint")
    assert touched == BLOCKS | HEADS
    joint = get_method("joint")(None, 3, 4).exit_losses([z.detach() for z in logits], y, ctx("joint"))
    assert torch.equal(losses, joint)


@pytest.mark.parametrize("epochs,expected", [
    (1, [("exit0-2", 1)]), (2, [("exit0", 1), ("exit1-2", 1)]), (3, [("exit0", 1), ("exit1", 1), ("exit2", 1)]),
    (5, [("exit0", 1), ("exit1", 2), ("exit2", 2)]), (6, [("exit0", 2), ("exit1", 2), ("exit2", 2)])])
def test_cascade_opt_stages(epochs, expected):
    assert [(p.name, p.epochs) for p in get_method("cascade_opt")(None, 3, 4).phases(epochs)] == expected


@pytest.mark.parametrize("phase,modules", [("exit0", {"blocks.0", "heads.0"}), ("exit1", {"blocks.1", "heads.1"}),
                                           ("exit2", {"blocks.2", "heads.2"})])
def test_cascade_opt_stage_trains_its_block_and_head_only(phase, modules):
    losses, touched, *_ = one_step("cascade_opt", phase, {"tau": 1.0})
    assert touched == modules
    k = int(phase[-1])
    assert losses[k] > 0 and all(losses[j] == 0 for j in range(3) if j != k)


def test_cascade_opt_trains_exit_k_only_on_samples_that_reach_it():
    # tau 0.9. Exit 0 is confident on sample 0 only; exit 1 on sample 1 only (sample 0's row is not confident
    # there, but sample 0 left at exit 0, so it does not reach exit 2 either).
    z0 = torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    z1 = torch.tensor([[0.0, 1.0], [4.0, 0.0], [0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 2.0], [0.0, 3.0], [0.5, 0.0], [2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 0, 1])
    method = get_method("cascade_opt")(None, 3, 2)
    softplus = lambda t: math.log1p(math.exp(t))  # CE of a 2-class row = softplus(other logit − target logit)
    losses = method.exit_losses([z0, z1, z2], y, ctx("exit1"))
    assert losses[0] == 0 and losses[2] == 0
    assert losses[1].item() == pytest.approx((softplus(-4.0) + math.log(2) + softplus(1.0)) / 4, rel=1e-6)
    losses.sum().backward()
    assert torch.equal(z1.grad[0], torch.zeros(2)) and (z1.grad[1:].abs().sum(1) > 0).all()
    losses = method.exit_losses([z0, z1, z2], y, ctx("exit2"))
    assert losses[2].item() == pytest.approx((softplus(-0.5) + softplus(2.0)) / 4, rel=1e-6)
    losses = method.exit_losses([z0, z1, z2], y, ctx("exit0"))
    assert losses[0].item() == pytest.approx((softplus(-5.0) + 3 * math.log(2)) / 4, rel=1e-6)


def test_classynet_priority_sets_follow_validation_accuracy():
    method = get_method("classynet")(None, 3, 4)
    extra = method.extra_modules()
    assert extra.classes.all()
    extra.classes[1, 3] = False  # class 3 has no validation sample below: exit 1 must keep it out
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([[0, 0, 1, 0, 2, 2],   # exit 0: class accuracies 1, 0.5, 1
                                [1, 1, 1, 1, 2, 2],   # exit 1: 0, 1, 1
                                [3, 3, 3, 3, 3, 3]])  # exit 2: never restricted
    val_logits = F.one_hot(predictions, 4).float()
    method.epoch_end(extra, val_logits, labels, ctx("joint", extra))
    assert extra.classes.tolist() == [[True, False, True, True], [False, True, True, False], [True] * 4]
    assert method.metadata()["priority_classes"] == [[0, 2, 3], [1, 2], [0, 1, 2, 3]]
    method.epoch_end(extra, F.one_hot(labels.expand(3, -1), 4).float(), labels, ctx("joint", extra))
    assert extra.classes.tolist() == [[True] * 4, [True, True, True, False], [True] * 4]  # classes come back
    loose = get_method("classynet")({"class_acc_threshold": 0.5}, 3, 4)
    loose_extra = loose.extra_modules()
    loose.epoch_end(loose_extra, val_logits, labels, ctx("joint", loose_extra))
    assert loose_extra.classes[0].tolist() == [True, True, True, True]  # accuracy 0.5 ≥ 0.5


def test_classynet_masked_samples_carry_exactly_zero_gradient():
    method = get_method("classynet")(None, 3, 4)
    extra = method.extra_modules()
    extra.classes[0] = torch.tensor([True, False, False, False])
    extra.classes[1] = torch.tensor([False, True, True, False])
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(4, 4, generator=gen, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3])
    losses = method.exit_losses(logits, y, ctx("joint", extra))
    ce = [F.cross_entropy(z.detach(), y, reduction="none") for z in logits]
    expected = torch.stack([ce[0][0], ce[1][1] + ce[1][2], ce[2].sum()]) / 4 / 3
    assert torch.allclose(losses, expected)
    losses.sum().backward()
    nonzero = [(z.grad.abs().sum(1) > 0).tolist() for z in logits]
    assert nonzero == [[True, False, False, False], [False, True, True, False], [True] * 4]
    assert torch.equal(logits[0].grad[1:], torch.zeros(3, 4))


def test_classynet_with_full_sets_is_joint():
    method = get_method("classynet")(None, 3, 4)
    logits = [torch.randn(8, 4, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    y = torch.arange(8) % 4
    joint = get_method("joint")(None, 3, 4).exit_losses(logits, y, ctx("joint"))
    assert torch.allclose(method.exit_losses(logits, y, ctx("joint", method.extra_modules())), joint)
