"""BranchyNet's optional pre-training of the main network (the authors' regime) before the joint phase."""

import pytest
import torch

from bench.errors import BenchError
from bench.models import build_model
from bench.train.method import StepContext, all_parameters, get_method


@pytest.mark.parametrize("fraction, epochs, split", [(0.0, 10, [("joint", 10)]), (0.5, 10, [("pretrain", 5), ("joint", 5)]),
                                                     (0.25, 10, [("pretrain", 3), ("joint", 7)]),  # 2.5 rounds up
                                                     (0.9, 2, [("pretrain", 1), ("joint", 1)]),  # ≥ 1 joint epoch
                                                     (0.5, 1, [("joint", 1)])])
def test_phase_split(fraction, epochs, split):
    method = get_method("branchynet")({"pretrain_fraction": fraction}, 3, 4)
    assert [(p.name, p.epochs) for p in method.phases(epochs)] == split


def test_default_is_joint_from_the_start():
    assert get_method("branchynet").defaults["pretrain_fraction"] == 0.0


def test_pretrain_epochs_give_zero_gradient_to_the_early_exits():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method("branchynet")({"pretrain_fraction": 0.5}, model.num_exits, 4)
    pretrain, joint = method.phases(4)
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 4
    chosen = {id(p) for p in pretrain.trainable(model, None)}
    early = [p for head in model.heads[:-1] for p in head.parameters()]
    assert not any(id(p) in chosen for p in early)
    assert chosen == {id(p) for p in model.backbone_parameters() + list(model.heads[-1].parameters())}
    losses = method.exit_losses(model(x), y, StepContext(0, 4, 0, "pretrain"))
    assert losses[:-1].tolist() == [0.0, 0.0]
    assert torch.allclose(losses[-1], torch.nn.functional.cross_entropy(model(x)[-1], y))
    losses.sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in early)
    assert {id(p) for p in joint.trainable(model, None)} == {id(p) for p in all_parameters(model, None)}
    joint_losses = method.exit_losses(model(x), y, StepContext(2, 4, 0, "joint"))
    assert (joint_losses > 0).all()


def test_pretrain_fraction_out_of_range():
    with pytest.raises(BenchError, match=r"methods.branchynet.pretrain_fraction must be in \[0, 1\)"):
        get_method("branchynet")({"pretrain_fraction": 1.0}, 3, 4)
