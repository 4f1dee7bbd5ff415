"""ZTW (cascading ICs + geometric ensembles, three phases) and L2W-DEN (meta-learned sample weights)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.models import build_model, exit_costs
from bench.train.engine import set_mode
from bench.train.method import StepContext, all_parameters, get_method
from methods.l2w_den import exit_assignment, sample_weights, target_proportions
from methods.ztw import split_epochs


def tiny_batch(n=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % classes


def ztw_setup():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method("ztw")(None, model.num_exits, 4)
    return model, method, method.extra_modules()


def enter(method, model, extra, name):
    """Start phase `name` as the engine does: select its parameters, freeze the rest."""
    phase = next(p for p in method.phases(6) if p.name == name)
    chosen = {id(p) for p in phase.trainable(model, extra)}
    for p in all_parameters(model, extra):
        p.requires_grad_(id(p) in chosen)
    return chosen


def ids(params):
    return {id(p) for p in params}


# ---- ZTW ------------------------------------------------------------------------------------------------

def test_ztw_phases_and_trainable_sets():
    model, method, extra = ztw_setup()
    assert [(p.name, p.epochs) for p in method.phases(6)] == [("backbone", 3), ("cascade", 2), ("ensemble", 1)]
    assert [p.epochs for p in method.phases(10)] == [5, 3, 2]
    assert [p.epochs for p in method.phases(5)] == [3, 1, 1]
    assert [(p.name, p.epochs) for p in method.phases(2)] == [("backbone", 1), ("cascade", 1)]
    assert split_epochs(4, [0.9, 0.05, 0.05]) == [2, 1, 1]  # every phase keeps ≥ 1 epoch

    assert enter(method, model, extra, "backbone") == ids(model.backbone_parameters()) | ids(model.heads[-1].parameters())
    ic_heads = ids(p for head in model.heads[:-1] for p in head.parameters())
    assert enter(method, model, extra, "cascade") == ic_heads | ids(extra.norms.parameters()) | ids(extra.cascades.parameters())
    assert enter(method, model, extra, "ensemble") == ids(extra.ensembles.parameters())
    # two ICs on a three-exit model: one cascade (into IC 1), an ensemble per IC, nothing on the deepest exit
    assert len(extra.cascades) == len(extra.norms) == 1 and len(extra.ensembles) == 2
    assert [e.weight.shape[0] for e in extra.ensembles] == [1, 2]
    assert extra.cascades[0].bias is None


def test_ztw_cascade_input_is_detached_and_used():
    model, method, extra = ztw_setup()
    enter(method, model, extra, "cascade")
    model.eval()  # the same BatchNorm behaviour in the forward and in the hand computation below
    with torch.no_grad():
        extra.norms[0].weight.copy_(torch.linspace(0.5, 2.0, 4))  # a non-trivial LayerNorm
    x, _ = tiny_batch()
    z0, z1, z2 = method.forward(model, extra, x)
    # no gradient from IC 1 into IC 0's logits (nor IC 0's head) through the cascade
    assert torch.autograd.grad(z1.sum(), z0, retain_graph=True, allow_unused=True)[0] is None
    assert all(g is None for g in torch.autograd.grad(z1.sum(), list(model.heads[0].parameters()), retain_graph=True,
                                                      allow_unused=True))
    # ... but the cascade layer does get gradient, and IC 1 = head_1(h_1) + cascade(LayerNorm(z_0))
    assert torch.autograd.grad(z1.sum(), extra.cascades[0].weight, retain_graph=True)[0].abs().sum() > 0
    with torch.no_grad():
        h1 = model.blocks[1](model.blocks[0](x))
        expected = model.heads[1](h1) + F.linear(F.layer_norm(z0, (4,), extra.norms[0].weight, extra.norms[0].bias),
                                                 extra.cascades[0].weight)
    assert torch.allclose(z1, expected, atol=1e-5)
    assert not torch.allclose(z1, model.heads[1](h1), atol=1e-3)


def test_ztw_ensemble_formula_on_hand_made_logits():
    _, method, extra = ztw_setup()
    z0 = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])  # softmax [1/6, 1/2, 1/6, 1/6]
    z1 = torch.tensor([[1.0, 1.0, 1.0, 1.0]])  # uniform: log 1/4 everywhere
    with torch.no_grad():
        extra.ensembles[0].weight.fill_(0.0)
        extra.ensembles[0].bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
        extra.ensembles[1].weight.copy_(torch.tensor([math.log(2.0), math.log(0.5)]))
        extra.ensembles[1].bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    e0, e1 = method.ensemble(extra, [z0, z1])
    l6, l2, l4 = math.log(1 / 6), math.log(1 / 2), math.log(1 / 4)
    assert torch.allclose(e0, torch.tensor([[l6, l2 + 1.0, l6, l6]]))
    # (1/2)(2·log p_0 + 0.5·log p_1) + b
    expected = [0.5 * (2 * a + 0.5 * l4) + b for a, b in zip([l6, l2, l6, l6], [0.1, 0.2, 0.3, 0.4])]
    assert torch.allclose(e1, torch.tensor([expected]))


def test_ztw_forward_returns_ics_then_ensembles_and_the_raw_final_exit():
    model, method, extra = ztw_setup()
    model.eval()
    x, y = tiny_batch()
    enter(method, model, extra, "cascade")
    with torch.no_grad():
        ics = method.forward(model, extra, x)
    enter(method, model, extra, "ensemble")
    with torch.no_grad():
        ens = method.forward(model, extra, x)
        expected = method.ensemble(extra, ics[:2])
    assert torch.allclose(ens[0], expected[0]) and torch.allclose(ens[1], expected[1])
    assert torch.equal(ens[2], ics[2])  # the deepest exit is the backbone's classifier, untouched
    # at init exp(w) ≈ 1, b = 0: the ensemble is ≈ the mean of the log-softmaxes
    assert torch.allclose(ens[1], (ics[0].log_softmax(-1) + ics[1].log_softmax(-1)) / 2, atol=0.05)
    assert not torch.allclose(ens[1], ics[1], atol=1e-2)
    # a method that has not been trained here (FLOPs counting, a fresh run) computes the ensembles
    fresh = get_method("ztw")(None, 3, 4)
    with torch.no_grad():
        assert torch.allclose(fresh.forward(model, extra, x)[1], ens[1])


def test_ztw_losses_per_phase():
    model, method, extra = ztw_setup()
    x, y = tiny_batch()
    for name in ("backbone", "cascade", "ensemble"):
        enter(method, model, extra, name)
        logits = method.forward(model, extra, x)
        ce = [F.cross_entropy(z, y).item() for z in logits]
        losses = method.exit_losses(logits, y, StepContext(0, 6, 0, name))
        expected = [0.0, 0.0, ce[2]] if name == "backbone" else [ce[0] / 2, ce[1] / 2, 0.0]
        assert torch.allclose(losses, torch.tensor(expected), atol=1e-6), name
    with pytest.raises(RuntimeError, match="stage 'ensemble' but the phase is 'cascade'"):
        method.exit_losses(logits, y, StepContext(0, 6, 0, "cascade"))


def test_ztw_frozen_backbone_keeps_its_batchnorm_statistics():
    model, method, extra = ztw_setup()
    enter(method, model, extra, "cascade")
    set_mode(True, model, extra)  # what the engine does at the start of each epoch
    block_bn, ic_bn = model.blocks[0][1], model.heads[0][1]
    before_block, before_ic = block_bn.running_mean.clone(), ic_bn.running_mean.clone()
    method.forward(model, extra, tiny_batch()[0])
    assert torch.equal(block_bn.running_mean, before_block)  # frozen backbone: running statistics kept
    assert not torch.equal(ic_bn.running_mean, before_ic)  # the IC being trained: batch statistics


def test_ztw_flops_count_cascade_and_ensemble():
    model, method, extra = ztw_setup()
    plain = exit_costs(model, (1, 8, 8))["flops"]
    ztw = exit_costs(model, (1, 8, 8), lambda x, upto: method.forward(model, extra, x, upto))["flops"]
    assert ztw[0] >= plain[0]
    assert ztw[1] - plain[1] >= 2 * 4 * 4  # the cascade Linear(C→C): 2·C² FLOPs
    assert ztw[2] - plain[2] == ztw[1] - plain[1]  # nothing added at the deepest exit


# ---- L2W-DEN --------------------------------------------------------------------------------------------

def l2w_setup(params=None):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method("l2w_den")(params, model.num_exits, 4)
    net = method.extra_modules()
    model.train()
    return model, method, net


def ctx_for(model, net, x, step, lr=0.01):
    return StepContext(epoch=0, num_epochs=1, step=step, phase="joint", model=model, extra=net, inputs=x, lr=lr)


def test_l2w_weights_from_a_hand_set_weight_net():
    assert torch.allclose(sample_weights(torch.tensor([[0.5, -0.5, 0.0], [1.0, 1.0, 1.0], [0.3, 0.0, 0.0]]), 0.8),
                          torch.tensor([[1.4, 0.6, 1.0], [1.0, 1.0, 1.0], [1.16, 0.92, 0.92]]))
    model, method, net = l2w_setup()
    with torch.no_grad():  # output layer: zero weights, bias atanh(m) → the net outputs m for every sample
        net[2].weight.zero_()
        net[2].bias.copy_(torch.atanh(torch.tensor([0.5, -0.5, 0.0])))
    x, y = tiny_batch()
    logits = model(x)
    ce = torch.stack([F.cross_entropy(z, y, reduction="none") for z in logits], dim=1)
    w = torch.tensor([1.4, 0.6, 1.0])
    losses = method.exit_losses(logits, y, ctx_for(model, net, x, step=1))  # step 1: no meta step
    assert torch.allclose(losses, (ce * w).mean(0), atol=1e-6)
    assert losses.requires_grad
    losses.sum().backward()
    assert all(p.grad is None for p in net.parameters())  # the task loss does not train the weight net


def test_l2w_target_proportions_and_exit_assignment():
    q = target_proportions(0.75, 3)
    powers = torch.tensor([0.75, 0.75 ** 2, 0.75 ** 3])
    assert torch.allclose(q, powers / powers.sum())
    assert torch.allclose(q, torch.tensor([0.43243, 0.32432, 0.24324]), atol=1e-5)
    conf = torch.tensor([
        [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.05],  # exit 0 takes floor(10·0.432) = 4: 0, 2, 4, 6
        [0.99, 0.2, 0.98, 0.9, 0.1, 0.8, 0.3, 0.7, 0.6, 0.5],  # exit 1, among the rest, takes 3: 3, 5, 7
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],  # the last exit takes what is left
    ])
    assigned = exit_assignment(conf, q)
    assert [a.tolist() for a in assigned] == [[0, 2, 4, 6], [3, 5, 7], [9, 8, 1]]
    # a steeper p sends fewer samples early
    assert [len(a) for a in exit_assignment(conf, target_proportions(0.25, 3))] == [7, 1, 2]


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_l2w_meta_step_changes_only_the_weight_net():
    model, method, net = l2w_setup()
    x, y = tiny_batch()
    net_before = snapshot(net)
    logits = model(x)  # the engine's forward (updates BN running stats itself, before the meta step)
    network_before = snapshot(model)
    losses = method.exit_losses(logits, y, ctx_for(model, net, x, step=0))
    assert all(torch.equal(v, network_before[k]) for k, v in model.state_dict().items())  # params and BN buffers
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None for p in net.parameters())
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, net_before[k])]
    assert changed == list(net_before)  # every weight-net tensor moved (Adam)
    assert method.last_meta_loss is not None and method.last_meta_loss > 0
    assert torch.isfinite(losses).all()
    # not a meta step: the weight net stays
    after = snapshot(net)
    method.exit_losses(model(x), y, ctx_for(model, net, x, step=3))
    assert all(torch.equal(v, after[k]) for k, v in net.state_dict().items())


def test_l2w_meta_step_is_deterministic():
    def run():
        model, method, net = l2w_setup()
        x, y = tiny_batch()
        for step in (0, 10):
            method.exit_losses(model(x), y, ctx_for(model, net, x, step=step))
        return snapshot(net), method.last_meta_loss

    (first, loss1), (second, loss2) = run(), run()
    assert loss1 == loss2
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_l2w_meta_gradient_matches_finite_differences():
    """The meta loss depends on the weight net only through the pseudo step; check d(meta loss)/d(bias of the
    weight net's output) against central differences in float64."""
    model, method, net = l2w_setup()
    model.double().eval()  # eval: BN uses running stats, so the check does not depend on batch statistics
    net.double()
    x, y = tiny_batch()
    x = x.double()
    lr = 0.5

    def meta_loss(bias):
        params = {name: p.detach() for name, p in net.named_parameters()}
        params["2.bias"] = bias
        return method.meta_loss(model, net, params, x, y, lr)

    bias = net[2].bias.detach().clone().requires_grad_()
    grad = torch.autograd.grad(meta_loss(bias), bias)[0]
    eps = 1e-5
    numeric = torch.stack([(meta_loss(bias.detach() + eps * e) - meta_loss(bias.detach() - eps * e)) / (2 * eps)
                           for e in torch.eye(3, dtype=torch.float64)])
    assert grad.abs().max() > 1e-6
    assert torch.allclose(grad, numeric, rtol=1e-4, atol=1e-9)


def test_l2w_meta_lr_follows_the_decay_and_ignores_a_warm_up():
    """The authors' meta lr is meta_lr × the network's cosine decay. Measured against the first step's lr, a linear
    warm-up (first lr = peak / W) multiplied it by up to W; measured against the highest lr so far it stays meta_lr
    through the warm-up and then decays with the network's lr."""
    from bench.train import recipe

    def lrs(warmup_epochs):  # the engine's own schedule: 4 epochs of 5 steps, lr 0.1, cosine after the warm-up
        settings = {"lr": 0.1, "weight_decay": 0.0, "epochs": 4, "optimizer": {"name": "sgd"},
                    "schedule": {"name": "cosine", "warmup_epochs": warmup_epochs}}
        optimizer, scheduler = recipe.build([torch.nn.Parameter(torch.zeros(1))], settings, 20, 5)
        out = []
        for _ in range(20):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    base = 1e-4
    plain = lrs(0)  # no warm-up: exactly the authors' rule, meta_lr × lr_t / lr_0
    _, method, _ = l2w_setup({"meta_lr": base})
    assert [method.meta_lr(lr) for lr in plain] == pytest.approx([base * lr / plain[0] for lr in plain], rel=1e-12)
    warm = lrs(1)  # 5 warm-up steps from 0.02 to 0.1, then the cosine decay
    assert warm[0] == pytest.approx(0.02) and max(warm) == pytest.approx(0.1)
    _, method, _ = l2w_setup({"meta_lr": base})
    got = [method.meta_lr(lr) for lr in warm]
    peak = [max(warm[:t + 1]) for t in range(len(warm))]
    assert got == pytest.approx([base * lr / p for lr, p in zip(warm, peak)], rel=1e-12)
    assert max(got) == pytest.approx(base) and got[:5] == pytest.approx([base] * 5)
