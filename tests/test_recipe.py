"""Training recipes (bench/train/recipe.py): every schedule's learning rate per step against its closed form,
the optimisers built with the configured hyper-parameters, one-line errors for bad recipe keys, the default
study's recipe training bit-identically to a hand-written AdamW + cosine loop, and resuming a non-default
recipe (SGD-Nesterov, multistep, warm-up) bit-identically."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.config import validate
from bench.data.base import load_prepared, prepare_dataset
from bench.errors import BenchError
from bench.models import build_model
from bench.study import merge
from bench.train import recipe
from bench.train.engine import RunSpec, train_run

LR = 0.2


def lrs(settings: dict, phase_steps: int, steps_per_epoch: int) -> list[float]:
    """The learning rate of each of a phase's steps, as the engine steps the scheduler."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, scheduler = recipe.build(params, settings, phase_steps, steps_per_epoch)
    out = []
    for _ in range(phase_steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def section(epochs: int, optimizer: dict | None = None, schedule: dict | None = None) -> dict:
    return {"epochs": epochs, "lr": LR, "weight_decay": 0.0, "optimizer": optimizer or {}, "schedule": schedule or {}}


def close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-15) for g, w in zip(got, want))


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_cosine_with_warmup_follows_its_closed_form(warmup):
    epochs, spe = 6, 7
    T, W = epochs * spe, warmup * spe
    want = [LR * (t + 1) / W if t < W else LR * (1 + math.cos(math.pi * (t - W) / (T - W))) / 2 for t in range(T)]
    assert close(lrs(section(epochs, schedule={"name": "cosine", "warmup_epochs": warmup}), T, spe), want)


@pytest.mark.parametrize("warmup", [0, 2, 3])
def test_multistep_counts_milestones_in_epochs_from_the_phase_start(warmup):
    epochs, spe, milestones, gamma = 8, 5, [3, 6], 0.25
    T, W = epochs * spe, warmup * spe
    # a milestone inside the warm-up (3 with 3 warm-up epochs) applies from the warm-up's end
    want = [LR * (t + 1) / W if t < W else LR * gamma ** sum(m * spe <= t for m in milestones) for t in range(T)]
    got = lrs(section(epochs, schedule={"name": "multistep", "milestones": milestones, "gamma": gamma,
                                        "warmup_epochs": warmup}), T, spe)
    assert close(got, want)
    assert got[-1] == pytest.approx(LR * gamma ** 2)


def test_constant_schedule_and_a_phase_shorter_than_the_warmup():
    assert close(lrs(section(5, schedule={"name": "constant", "warmup_epochs": 2}), 20, 4),
                 [LR * (t + 1) / 8 if t < 8 else LR for t in range(20)])
    # a phase of 1 epoch with 2 warm-up epochs (e.g. a short method phase): warm-up over the phase, up to lr
    assert close(lrs(section(5, schedule={"name": "cosine", "warmup_epochs": 2}), 4, 4), [LR * (t + 1) / 4 for t in range(4)])


def test_the_scheduler_resumes_from_its_state_dict():
    """What a checkpoint saves: a fresh scheduler loaded with the state after k steps continues identically."""
    settings = section(6, schedule={"name": "multistep", "milestones": [2, 4], "gamma": 0.5, "warmup_epochs": 1})
    straight = lrs(settings, 30, 5)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, scheduler = recipe.build(params, settings, 30, 5)
    for _ in range(12):
        optimizer.step()
        scheduler.step()
    state = copy.deepcopy((optimizer.state_dict(), scheduler.state_dict()))
    optimizer, scheduler = recipe.build(params, settings, 30, 5)
    optimizer.load_state_dict(state[0])
    scheduler.load_state_dict(state[1])
    rest = []
    for _ in range(18):
        rest.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rest == straight[12:]


def test_optimisers_are_built_with_the_configured_hyper_parameters():
    params = [torch.nn.Parameter(torch.zeros(2))]
    settings = {**section(3, {"name": "sgd", "momentum": 0.85, "nesterov": True}), "lr": 0.1, "weight_decay": 5e-4}
    sgd, _ = recipe.build(params, settings, 10, 5)
    group = sgd.param_groups[0]
    assert type(sgd) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"], group["dampening"]) == \
        (0.1, 0.85, True, 5e-4, 0)
    settings = {**section(3, {"name": "adamw", "betas": [0.8, 0.99], "eps": 1e-6}), "lr": 0.003, "weight_decay": 0.01}
    adamw, _ = recipe.build(params, settings, 10, 5)
    group = adamw.param_groups[0]
    assert type(adamw) is torch.optim.AdamW
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["amsgrad"]) == \
        (0.003, (0.8, 0.99), 1e-6, 0.01, False)
    # the default recipe is torch's AdamW at its own defaults (what the engine always built)
    default, scheduler = recipe.build(params, {"epochs": 3, "lr": 0.003, "weight_decay": 5e-4}, 10, 5)
    reference = torch.optim.AdamW(params, lr=0.003, weight_decay=5e-4)
    assert default.defaults == reference.defaults
    assert type(scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR and scheduler.T_max == 10


def test_an_sgd_step_is_the_nesterov_formula():
    """One SGD-Nesterov step with L2 against the update written out: g' = g + wd·w, b = g', w -= lr (g' + μ b)."""
    w0, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25])
    p = torch.nn.Parameter(w0.clone())
    optimizer, _ = recipe.build([p], {**section(2, {"name": "sgd", "momentum": 0.9, "nesterov": True}),
                                      "lr": 0.1, "weight_decay": 0.01}, 4, 2)
    p.grad = g.clone()
    optimizer.step()
    decayed = g + 0.01 * w0
    assert torch.allclose(p.detach(), w0 - 0.1 * (decayed + 0.9 * decayed), rtol=0, atol=1e-7)


@pytest.mark.parametrize("bad, where", [
    ({"optimizer": {"name": "adam"}}, "train.tiny.optimizer.name"),
    ({"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}}, "train.tiny.optimizer.betas"),
    ({"optimizer": {"name": "sgd", "momentum": 1.5}}, "train.tiny.optimizer.momentum"),
    ({"optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": True}}, "train.tiny.optimizer.nesterov"),
    ({"optimizer": "sgd"}, "train.tiny.optimizer"),
    ({"schedule": {"name": "step"}}, "train.tiny.schedule.name"),
    ({"schedule": {"name": "cosine", "milestones": [1]}}, "train.tiny.schedule.milestones"),
    ({"schedule": {"name": "multistep", "milestones": [2, 1]}}, "train.tiny.schedule.milestones"),
    ({"schedule": {"name": "multistep", "milestones": [3]}}, "train.tiny.schedule.milestones"),
    ({"schedule": {"name": "multistep", "milestones": [1], "gamma": 0.0}}, "train.tiny.schedule.gamma"),
    ({"schedule": {"warmup_epochs": 3}}, "train.tiny.schedule.warmup_epochs"),
    ({"schedule": {"warmup_epochs": 1.5}}, "train.tiny.schedule.warmup_epochs"),
    ({"learning_rate": 0.1}, "train.tiny.learning_rate"),
])
def test_a_bad_recipe_key_is_one_line_naming_it(tiny_params, bad, where):
    params = merge(copy.deepcopy(tiny_params), {"train": {"tiny": {"epochs": 3, **bad}}})
    if "optimizer" in bad and not isinstance(bad["optimizer"], dict):
        params["train"]["tiny"]["optimizer"] = bad["optimizer"]
    with pytest.raises(BenchError) as error:
        validate(params)
    message = str(error.value)
    assert where in message and "\n" not in message
    if where.endswith(".name"):
        assert "valid choices" in message


def test_the_recipe_is_resolved_into_the_settings(tiny_params):
    params = validate(merge(copy.deepcopy(tiny_params), {"train": {"tiny": {
        "optimizer": {"name": "sgd", "nesterov": True}, "schedule": {"name": "multistep", "milestones": [1]}}}}))
    assert params["train"]["tiny"]["optimizer"] == {"name": "sgd", "momentum": 0.9, "nesterov": True}
    assert params["train"]["tiny"]["schedule"] == {"name": "multistep", "warmup_epochs": 0, "milestones": [1], "gamma": 0.1}


def test_every_recipe_key_has_a_one_line_meaning():
    from bench.paramdocs import SECTIONS

    for where, registry, common in (("optimizer", recipe.OPTIMIZERS, {}), ("schedule", recipe.SCHEDULES, recipe.SCHEDULE_COMMON)):
        for name in registry.names():
            for key in ["name", *common, *registry.get(name).defaults]:
                assert SECTIONS[f"train.<dataset>.{where}"].get(key), f"train.<dataset>.{where}.{key} has no meaning"


# --- the default recipe trains bit-identically to the loop the engine always ran ---------------------------

DATA = {"n_train": 96, "n_val": 32, "n_test": 48, "noise": 1.0, "split_seed": 0, "subset": None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    prepare_dataset("tiny", DATA, root)
    return load_prepared("tiny", root)


def reference_loop(data, settings: dict, common: dict, seed: int) -> torch.Tensor:
    """Joint training written out by hand: seeded as the engine seeds, AdamW(lr, weight_decay) and
    CosineAnnealingLR over all steps, one randperm per epoch; test logits of every exit."""
    torch.manual_seed(seed)
    torch.set_num_threads(common["threads"])
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator()
    gen.manual_seed(seed + 1)
    train, test = data.splits["train"], data.splits["test"]
    model = build_model(settings["model"]["name"], 1, data.num_classes,
                        {k: v for k, v in settings["model"].items() if k != "name"})
    model.to(memory_format=torch.channels_last)
    batch, epochs = settings["batch_size"], settings["epochs"]
    steps = -(-len(train) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for b in range(steps):
            idx = order[b * batch:(b + 1) * batch]
            outs = model(train.batch(idx).to(memory_format=torch.channels_last))
            loss = (torch.stack([F.cross_entropy(z, train.labels[idx]) for z in outs]) / len(outs)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        return torch.stack(model(test.batch(torch.arange(len(test))).to(memory_format=torch.channels_last)))


def test_the_default_recipe_trains_bit_identically_to_a_hand_written_adamw_cosine_loop(real_params, data, tmp_path):
    resolved = validate(real_params)
    for dataset in resolved["grid"]["datasets"]:  # the default study trains with the default recipe
        assert resolved["train"][dataset]["optimizer"] == {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8}
        assert resolved["train"][dataset]["schedule"] == {"name": "cosine", "warmup_epochs": 0}
    study = resolved["train"][resolved["grid"]["datasets"][0]]
    settings = {**resolved["train"]["tiny"], "lr": study["lr"], "weight_decay": study["weight_decay"], "epochs": 2,
                "batch_size": 32, "augment": False}
    assert settings["weight_decay"] > 0  # the weight decay is exercised
    common = {**resolved["train"]["common"], "threads": 1, "grad_stats_every": 2}
    spec = RunSpec("tiny", "joint", 0, {"label_smoothing": 0.0}, common, settings)
    train_run(spec, data, tmp_path / "run", {"digest": "default-recipe"}, progress=False)
    engine_logits = torch.load(tmp_path / "run" / "logits.pt", weights_only=True)["test"]["logits"]
    reference = reference_loop(data, settings, common, 0)
    assert engine_logits.dtype == reference.dtype and torch.equal(engine_logits, reference)


def test_a_non_default_recipe_resumes_bit_identically(data, real_params, tmp_path, monkeypatch, capsys):
    """SGD-Nesterov with multistep and a warm-up, killed inside and after the warm-up, for a one-phase method
    and one with a phase boundary (BranchyNet's pre-training): the same outputs as an uninterrupted run."""
    from tests.test_resume import identical, outputs, run

    settings = {"model": {"name": "tiny_cnn", "widths": [4, 8, 8], "head_width": 4}, "epochs": 4, "batch_size": 32,
                "lr": 0.05, "weight_decay": 5e-4, "augment": False,
                "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True},
                "schedule": {"name": "multistep", "milestones": [1, 3], "gamma": 0.5, "warmup_epochs": 1}}
    common = {**real_params["train"]["common"], "grad_stats_every": 3, "threads": 1}
    for name, params in (("joint", {}), ("branchynet", {"pretrain_fraction": 0.5})):
        spec = RunSpec("tiny", name, 0, params, common, settings)
        run(spec, data, tmp_path / name / "straight", monkeypatch)
        reference = outputs(tmp_path / name / "straight")
        assert reference["steps"]["lr"].iloc[0] == pytest.approx(0.05 * 2 / 3)  # logged after the step: lr/3, 2lr/3, …
        for stop in (1, 3):
            folder = tmp_path / name / f"stop{stop}"
            run(spec, data, folder, monkeypatch, kill_after=stop)
            assert run(spec, data, folder, monkeypatch) == 4 - stop
            resumed = outputs(folder)
            assert all(identical(reference[k], resumed[k]) for k in reference), f"{name} killed after epoch {stop}"
    capsys.readouterr()


# --- the profiles that reproduce the published set-ups ---------------------------------------------------

PUBLISHED = {  # what the authors' code sets (read from it; see the comments in each profile)
    "cgt_cifar100": ("resnet18_scan", 300, 500, 0.1, 5e-4, {"name": "sgd", "momentum": 0.9, "nesterov": True},
                     {"name": "multistep", "warmup_epochs": 0, "milestones": [250, 280, 295], "gamma": 0.1}),
    "sdn_cifar100": ("resnet56_sdn", 100, 128, 0.1, 1e-4, {"name": "sgd", "momentum": 0.9, "nesterov": False},
                     {"name": "multistep", "warmup_epochs": 0, "milestones": [34, 59, 84], "gamma": 0.1}),
}


@pytest.mark.parametrize("profile", sorted(PUBLISHED))
def test_the_published_set_up_profiles_validate_with_their_recipes(profile):
    from bench.study import profile_params
    from tests.conftest import ROOT

    params = validate(profile_params(ROOT, profile))
    model, epochs, batch, lr, weight_decay, optimizer, schedule = PUBLISHED[profile]
    section = params["train"]["cifar100"]
    assert params["grid"]["datasets"] == ["cifar100"] and section["model"]["name"] == model
    assert (section["epochs"], section["batch_size"], section["lr"], section["weight_decay"]) == (epochs, batch, lr, weight_decay)
    assert section["optimizer"] == optimizer and section["schedule"] == schedule and section["augment"]
    text = (ROOT / "profiles" / f"{profile}.yaml").read_text()
    assert "never" in text and "validation" in text  # says that model selection stays off the test set


def test_sdn_milestones_are_its_scheduler_stepped_at_the_start_of_each_epoch():
    """SDN's MultiStepMultiLR is stepped before each 1-based epoch e: lr(e) = 0.1 · 0.1^#{m ≤ e}, m in [35, 60,
    85]. Our per-step multistep with milestones [34, 59, 84] (0-based epochs) gives each epoch that lr."""
    spe = 2
    got = lrs({"epochs": 100, "lr": 0.1, "weight_decay": 0.0, "optimizer": {"name": "sgd"},
               "schedule": {"name": "multistep", "milestones": [34, 59, 84], "gamma": 0.1}}, 100 * spe, spe)
    theirs = [0.1 * 0.1 ** sum(m <= e for m in (35, 60, 85)) for e in range(1, 101)]
    assert close(got[::spe], theirs) and close(got[1::spe], theirs)
