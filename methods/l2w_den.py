"""L2W-DEN — Learning to Weight Samples for Dynamic Early-exiting Networks (Han, Pu, Lai, Wang, Song, Cao,
Huang, Deng, Huang; ECCV 2022; code LeapLabTHU/L2W-DEN)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.errors import BenchError
from bench.train.method import Method, Phase, check_range, register_method


def weight_net(num_exits: int, hidden: int) -> nn.Module:
    """The authors' `MLP_tanh` with one hidden layer: Linear(K→hidden) → ReLU → Linear(hidden→K) → tanh."""
    return nn.Sequential(nn.Linear(num_exits, hidden), nn.ReLU(), nn.Linear(hidden, num_exits), nn.Tanh())


def sample_weights(m: torch.Tensor, epsilon: float) -> torch.Tensor:
    """w_ik = 1 + ε·(m_ik − mean_k m_ik): the weight net's output [N, K] centred per sample (over its exits;
    the authors' `constraint_dimension col`), so each sample's weights average to 1."""
    return 1.0 + epsilon * (m - m.mean(dim=1, keepdim=True))


def weighted_exit_losses(ce: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-exit terms mean_i w_ik·CE_ik from per-sample losses [N, K]; their sum is the authors' loss."""
    return (weights * ce).mean(dim=0)


def target_proportions(p: float, num_exits: int) -> torch.Tensor:
    """q_k ∝ p^k, k = 1..K (the authors' `calc_target_probs`, in float32 as there)."""
    probs = torch.exp(torch.log(torch.tensor([p], dtype=torch.float32)) * torch.arange(1, num_exits + 1))
    return probs / probs.sum()


def exit_assignment(confidences: torch.Tensor, proportions: torch.Tensor) -> list[torch.Tensor]:
    """Which samples "would exit" at each exit under target proportions, as the authors' meta loss assigns
    them: exit k takes the floor(N·q_k) most confident samples (max softmax at exit k, descending) among those
    no earlier exit took; the last exit takes every sample left. confidences: [K, N] → K index tensors."""
    num_exits, n = confidences.shape
    taken = torch.zeros(n, dtype=torch.bool, device=confidences.device)
    assigned = []
    for k in range(num_exits):
        order = confidences[k].argsort(descending=True, stable=True)
        order = order[~taken[order]]
        if k < num_exits - 1:
            order = order[:math.floor(n * float(proportions[k]))]
        taken[order] = True
        assigned.append(order)
    return assigned


def per_sample_losses(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    return torch.stack([F.cross_entropy(z, targets, reduction="none") for z in logits], dim=1)  # [N, K]


@register_method("l2w_den")
class L2WDEN(Method):
    """A weight-prediction network (MLP: per-exit CE losses of a sample [K] → 500 hidden → K, tanh) weights every
    sample at every exit, w_ik = 1 + ε·(m_ik − mean_k m_ik); the network minimises Σ_k mean_i w_ik·CE_ik with the
    weights computed under no_grad (authors' `main_cifar_DDP.py`, methods.md §3.7).

    Meta step, every `meta_interval` steps, inside `exit_losses` (before the task weights are computed, as the
    authors meta-update before the real step): the batch is split in two halves (`chunk(2)`); a pseudo SGD step
    θ' = θ − lr·∇_θ Σ_k mean_i w_ik·CE_ik on half 1, with the predicted weights and the graph kept
    (`torch.func.functional_call`, create_graph=True, lr = the engine's current lr); on half 2 the meta loss is
    Σ_k CE at exit k of θ' over the samples that would exit at k under target proportions q_k ∝ p^k, assigned by
    descending max softmax (no grad), see `exit_assignment`. The weight net is updated by its own Adam (lr 1e-4,
    wd 1e-4, as the authors' ImageNet command; the meta lr follows the network's cosine decay as the authors'
    `adjust_meta_learning_rate`). Meta gradients are taken with `torch.autograd.grad` w.r.t. detached copies of the
    weight net's parameters, so the meta step puts no `.grad` on the network and changes none of its parameters
    or buffers; the weight net is in `extra` (moved, checkpointed and saved with the run by the engine) but not
    in any phase's trainable set, so the engine's optimiser never sees it. Exit policy: max softmax (the authors
    evaluate with MSDNet's budgeted confidence thresholds)."""

    defaults = {"epsilon": 0.8, "target_p": 0.75, "meta_interval": 10, "meta_lr": 1e-4, "meta_weight_decay": 1e-4,
                "hidden_size": 500}
    source = ("Han et al. 2022, Learning to Weight Samples for Dynamic Early-exiting Networks (ECCV), arXiv 2207.13824; "
              "LeapLabTHU/L2W-DEN tools/main_cifar_DDP.py, models/weight_predict.py (MLP_tanh), tools/meta.py")
    choices = {
        "epsilon": "0.8: the CIFAR value (ImageNet 0.3), with the CIFAR per-sample ('col') centring",
        "target_p": "0.75 = target_p_index 15/20 of the authors' ImageNet command; their CIFAR value NOT FOUND",
        "meta_interval": "ours: 10 (authors: 100 on ImageNet with batch 4096, argparse default 1; CIFAR value NOT "
                         "FOUND); counted in global optimiser steps (the authors use the batch index in the epoch)",
        "meta_lr": "1e-4 (authors' ImageNet command), times the engine's lr decay factor ctx.lr / (highest lr so far) "
                   "= the authors' cosine meta-lr schedule when the run is one cosine phase; during a warm-up "
                   "(ours) the meta lr stays at meta_lr",
        "meta_weight_decay": "1e-4 (authors' ImageNet command), Adam's coupled L2 as torch.optim.Adam there",
        "hidden_size": "500, one hidden layer (authors' command); weight-net input: per-exit CE losses ('loss')",
        "training": "one meta step per engine step, half 1 pseudo-trained / half 2 meta-validated, then the network "
                    "trained on the whole batch (the authors train on each half in turn, each preceded by a meta "
                    "step with the halves swapped); the pseudo step is plain SGD θ − lr·g with the engine's lr "
                    "(the authors copy their SGD's momentum and weight decay into it; our engine uses AdamW, whose "
                    "state the method does not see); BatchNorm in the pseudo/meta forwards runs in the model's mode "
                    "(train: batch statistics, as the authors' pseudo_net.train()) on cloned buffers, so the real "
                    "running statistics are not updated by the meta step (the authors' pseudo net is a discarded "
                    "copy); batches of fewer than 2 samples skip the meta step; ties in confidence are broken by "
                    "sample index (stable sort)",
        "policy": "max softmax thresholds (authors: MSDNet budgeted thresholds on max softmax)",
    }
    exit_policy = "max_softmax"
    not_state = ("meta_optimizer", "meta_optimizer_owner")  # saved by state_dict below; the owner is `extra`

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        where = f"methods.{self.name}"
        if not 0.0 < self.params["target_p"]:
            raise BenchError(f"{where}.target_p must be > 0, got {self.params['target_p']}")
        if self.params["meta_interval"] < 1 or self.params["hidden_size"] < 1:
            raise BenchError(f"{where}.meta_interval and {where}.hidden_size must be ≥ 1")
        check_range(self, "epsilon", lambda v: v >= 0, ">= 0")
        check_range(self, "meta_lr", lambda v: v > 0, "> 0")
        check_range(self, "meta_weight_decay", lambda v: v >= 0, ">= 0")
        self.proportions = target_proportions(self.params["target_p"], num_exits)
        self.meta_optimizer: torch.optim.Optimizer | None = None
        self.meta_optimizer_owner: nn.Module | None = None
        self.peak_lr: float | None = None
        self.last_meta_loss: float | None = None
        self.pending_meta_state: dict | None = None  # a checkpoint's meta-optimiser state, loaded on first use

    def state_dict(self) -> dict:
        """Plain attributes plus the weight net's Adam state (moments, step counts), so a resumed run's meta
        steps continue exactly where the killed run's stopped."""
        state = super().state_dict()
        state.pop("meta_optimizer", None)
        state.pop("pending_meta_state", None)
        state["meta_optimizer_state"] = (self.meta_optimizer.state_dict() if self.meta_optimizer is not None
                                         else self.pending_meta_state)
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        pending = state.pop("meta_optimizer_state")
        super().load_state_dict(state)
        self.meta_optimizer, self.meta_optimizer_owner, self.pending_meta_state = None, None, pending

    def extra_modules(self):
        return weight_net(self.num_exits, self.params["hidden_size"])

    def phases(self, epochs):
        return [Phase("joint", epochs, lambda model, extra: list(model.parameters()))]

    # ---- the weights ------------------------------------------------------------------------------------

    def weights(self, net: nn.Module, ce: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """w [N, K] from per-sample losses [N, K] (the net's input is detached, as the authors')."""
        m = net(ce.detach()) if params is None else functional_call(net, params, (ce.detach(),))
        return sample_weights(m, self.params["epsilon"])

    def exit_losses(self, logits, targets, ctx):
        if ctx.model is None or ctx.extra is None or ctx.inputs is None:
            raise RuntimeError("l2w_den needs ctx.model, ctx.extra (the weight net) and ctx.inputs")
        if ctx.step % self.params["meta_interval"] == 0:
            self.meta_step(ctx.model, ctx.extra, ctx.inputs, targets, ctx.lr)
        ce = per_sample_losses(logits, targets)
        with torch.no_grad():
            weights = self.weights(ctx.extra, ce)
        return weighted_exit_losses(ce, weights)

    # ---- the meta step ----------------------------------------------------------------------------------

    def meta_lr(self, lr: float) -> float:
        """meta_lr × the network's lr decay: lr / (the highest lr seen so far). Without warm-up that peak is the
        first step's lr (the authors' cosine meta-lr); during a linear warm-up lr is its own peak, so the meta lr
        stays meta_lr instead of growing with lr / (first step's tiny lr)."""
        if lr > (self.peak_lr or 0.0):
            self.peak_lr = lr
        return self.params["meta_lr"] * (lr / self.peak_lr if self.peak_lr else 1.0)

    def optimizer_for(self, net: nn.Module) -> torch.optim.Optimizer:
        if self.meta_optimizer_owner is not net:
            self.meta_optimizer = torch.optim.Adam(net.parameters(), lr=self.params["meta_lr"],
                                                   weight_decay=self.params["meta_weight_decay"])
            self.meta_optimizer_owner = net
            if self.pending_meta_state is not None:  # resumed: continue the checkpointed optimiser
                self.meta_optimizer.load_state_dict(self.pending_meta_state)
                self.pending_meta_state = None
        return self.meta_optimizer

    def meta_loss(self, model: nn.Module, net: nn.Module, net_params: dict, x: torch.Tensor, y: torch.Tensor,
                  lr: float) -> torch.Tensor:
        """Meta loss of the weight net (parameters `net_params`): pseudo step on half 1, assigned CE on half 2."""
        (x1, x2), (y1, y2) = x.chunk(2), y.chunk(2)
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        theta = dict(model.named_parameters())
        buffers = {name: b.clone() for name, b in model.named_buffers()}  # BN running stats: copies, discarded
        ce1 = per_sample_losses(functional_call(model, {**theta, **buffers}, (x1,)), y1)
        pseudo_loss = weighted_exit_losses(ce1, self.weights(net, ce1, net_params)).sum()
        grads = torch.autograd.grad(pseudo_loss, [theta[n] for n in names], create_graph=True)
        stepped = {**theta, **{n: theta[n] - lr * g for n, g in zip(names, grads)}}
        logits2 = functional_call(model, {**stepped, **{n: b.clone() for n, b in model.named_buffers()}}, (x2,))
        with torch.no_grad():
            confidences = torch.stack([z.softmax(-1).amax(-1) for z in logits2])
        loss = logits2[0].new_zeros(())
        for k, idx in enumerate(exit_assignment(confidences, self.proportions)):
            if len(idx) > 0:
                loss = loss + F.cross_entropy(logits2[k][idx], y2[idx])
        return loss

    def meta_step(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One update of the weight net only; the network's parameters, buffers and .grad are left as they were."""
        if len(x) < 2:
            return
        optimizer = self.optimizer_for(net)
        for group in optimizer.param_groups:
            group["lr"] = self.meta_lr(lr)
        net_params = {name: p.detach().requires_grad_() for name, p in net.named_parameters()}
        with torch.enable_grad():
            loss = self.meta_loss(model, net, net_params, x, y, lr)
            grads = torch.autograd.grad(loss, list(net_params.values()), allow_unused=True)
        for p, g in zip(net.parameters(), grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        optimizer.step()
        for p in net.parameters():
            p.grad = None
        self.last_meta_loss = float(loss.detach())
