"""Training recipes: the optimiser and the learning-rate schedule of `train.<dataset>`, as plugins of two
registries. `lr` and `weight_decay` stay flat keys of `train.<dataset>` (every optimiser has them: the peak
learning rate that the schedule scales, and the weight decay: decoupled in AdamW, L2 in SGD as in
torch.optim.SGD and the authors' code); `optimizer: {name, ...}` and `schedule: {name, warmup_epochs, ...}`
add what is particular to one optimiser or schedule. The defaults, AdamW and cosine without warm-up, are
what the engine always did (torch's AdamW and CosineAnnealingLR over each method phase's steps).

A schedule runs per method phase (each phase has its own optimiser, as before): cosine decays over the
phase's steps, multistep milestones count epochs from the phase's start, and the linear warm-up takes the
phase's first `warmup_epochs` epochs (learning rate (t + 1) / W × lr at step t < W), after which the
schedule proper runs over the remaining steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bench.config_check import check_section
from bench.errors import BenchError
from bench.registry import Registry

Scheduler = torch.optim.lr_scheduler.LRScheduler


@dataclass(frozen=True)
class OptimizerPlugin:
    name: str
    defaults: dict  # the optimiser's own keys (besides name, lr, weight_decay) and their defaults
    build: Callable[[list, float, float, dict], torch.optim.Optimizer]  # (params, lr, weight_decay, own keys)
    check: Callable[[dict, str], None]  # (own keys, where): range checks


@dataclass(frozen=True)
class SchedulePlugin:
    name: str
    defaults: dict  # the schedule's own keys (besides name and warmup_epochs)
    # (optimizer, steps after warm-up, steps per epoch, warm-up steps, own keys) -> scheduler of those steps
    build: Callable[[torch.optim.Optimizer, int, int, int, dict], Scheduler]
    check: Callable[[dict, int, str], None]  # (own keys, train.<dataset>.epochs, where): range checks


OPTIMIZERS: Registry[OptimizerPlugin] = Registry("optimizer")
SCHEDULES: Registry[SchedulePlugin] = Registry("schedule")
OPTIMIZER_DEFAULT = {"name": "adamw"}
SCHEDULE_DEFAULT = {"name": "cosine"}
SCHEDULE_COMMON = {"warmup_epochs": 0}  # every schedule composes with a linear warm-up
# (each key's one-line meaning is in bench/paramdocs.py, train.<dataset>.optimizer / .schedule)


def register_optimizer(plugin: OptimizerPlugin) -> OptimizerPlugin:
    return OPTIMIZERS.register(plugin.name)(plugin)


def register_schedule(plugin: SchedulePlugin) -> SchedulePlugin:
    return SCHEDULES.register(plugin.name)(plugin)


def bad(where: str, value: object, allowed: str) -> BenchError:
    return BenchError(f"{where} = {value!r} is out of range; allowed: {allowed}")


# --- optimisers ---------------------------------------------------------------------------------------

def build_adamw(params: list, lr: float, weight_decay: float, own: dict) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(own["betas"]), eps=own["eps"])


def build_sgd(params: list, lr: float, weight_decay: float, own: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=own["momentum"],
                           nesterov=own["nesterov"])


def check_adamw(own: dict, where: str) -> None:
    if not (len(own["betas"]) == 2 and all(0 <= b < 1 for b in own["betas"])):
        raise bad(f"{where}.betas", own["betas"], "two numbers in [0, 1)")
    if not own["eps"] > 0:
        raise bad(f"{where}.eps", own["eps"], "a number > 0")


def check_sgd(own: dict, where: str) -> None:
    if not 0 <= own["momentum"] < 1:
        raise bad(f"{where}.momentum", own["momentum"], "a number in [0, 1)")
    if own["nesterov"] and own["momentum"] == 0:
        raise bad(f"{where}.nesterov", True, "false when momentum is 0 (Nesterov needs momentum > 0)")


register_optimizer(OptimizerPlugin("adamw", {"betas": [0.9, 0.999], "eps": 1.0e-8}, build_adamw, check_adamw))
register_optimizer(OptimizerPlugin("sgd", {"momentum": 0.9, "nesterov": False}, build_sgd, check_sgd))


# --- schedules ----------------------------------------------------------------------------------------

def no_check(own: dict, epochs: int, where: str) -> None:
    pass


def build_cosine(optimizer, steps: int, steps_per_epoch: int, warmup_steps: int, own: dict) -> Scheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))


def build_constant(optimizer, steps: int, steps_per_epoch: int, warmup_steps: int, own: dict) -> Scheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, constant_factor)


def constant_factor(step: int) -> float:
    return 1.0


def build_multistep(optimizer, steps: int, steps_per_epoch: int, warmup_steps: int, own: dict) -> Scheduler:
    """Milestones are epochs from the phase's start (warm-up included); the scheduler counts steps after it."""
    milestones = [m * steps_per_epoch - warmup_steps for m in own["milestones"]]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, MilestoneFactor(milestones, own["gamma"]))


class MilestoneFactor:
    """gamma ** (milestones passed) at a step counted after warm-up (milestones inside the warm-up count from
    its end); a callable object so that LambdaLR's state_dict holds it."""

    def __init__(self, milestones: list[int], gamma: float):
        self.milestones, self.gamma = milestones, gamma

    def __call__(self, step: int) -> float:
        return self.gamma ** sum(m <= step for m in self.milestones)


def check_multistep(own: dict, epochs: int, where: str) -> None:
    milestones = own["milestones"]
    if not (all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m < epochs for m in milestones)
            and milestones == sorted(set(milestones))):
        raise bad(f"{where}.milestones", milestones, f"increasing integers in [1, {epochs}) (epochs from the "
                  "start of a phase, below train.<dataset>.epochs)")
    if not 0 < own["gamma"] <= 1:
        raise bad(f"{where}.gamma", own["gamma"], "a number in (0, 1]: the factor at each milestone")


register_schedule(SchedulePlugin("cosine", {}, build_cosine, no_check))
register_schedule(SchedulePlugin("constant", {}, build_constant, no_check))
register_schedule(SchedulePlugin("multistep", {"milestones": [1], "gamma": 0.1}, build_multistep, check_multistep))


class WarmupFactor:
    """(t + 1) / W: the linear warm-up's factor at step t (a callable object, so LambdaLR's state_dict holds it)."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup_steps


# --- resolving and building ---------------------------------------------------------------------------

def resolve_part(registry: Registry, default: dict, common: dict, given: object, where: str) -> dict:
    """{name, common keys, the plugin's keys}, completed by defaults; unknown names and keys are one line."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise BenchError(f"{where} must be a mapping like {{name: {default['name']}}}, got {given!r}")
    name = given.get("name", default["name"])
    plugin = registry.get(name, where=f"{where}.name")
    return check_section({"name": name, **common, **plugin.defaults}, given, where)


def own_keys(section: dict) -> dict:
    """A plugin's own keys of an optimizer/schedule section (without name and the keys every schedule has)."""
    return {k: v for k, v in section.items() if k not in ("name", *SCHEDULE_COMMON)}


def resolve(settings: dict, where: str) -> tuple[dict, dict]:
    """The optimiser and schedule sections of train.<dataset> `settings` with every key filled in (a section
    without them gets the defaults: AdamW, cosine, no warm-up), checked against the plugins and the epochs."""
    optimizer = resolve_part(OPTIMIZERS, OPTIMIZER_DEFAULT, {}, settings.get("optimizer"), f"{where}.optimizer")
    schedule = resolve_part(SCHEDULES, SCHEDULE_DEFAULT, SCHEDULE_COMMON, settings.get("schedule"), f"{where}.schedule")
    epochs = settings["epochs"]
    OPTIMIZERS.get(optimizer["name"]).check(own_keys(optimizer), f"{where}.optimizer")
    warmup = schedule["warmup_epochs"]
    if not (0 <= warmup < epochs):
        raise bad(f"{where}.schedule.warmup_epochs", warmup, f"an integer in [0, {epochs}) (below {where}.epochs)")
    SCHEDULES.get(schedule["name"]).check(own_keys(schedule), epochs, f"{where}.schedule")
    return optimizer, schedule


def build(params: list, settings: dict, phase_steps: int, steps_per_epoch: int,
          where: str = "train.<dataset>") -> tuple[torch.optim.Optimizer, Scheduler]:
    """The optimiser over `params` and the scheduler of one phase of `phase_steps` steps (stepped once per step)."""
    optimizer_section, schedule_section = resolve(settings, where)
    optimizer = OPTIMIZERS.get(optimizer_section["name"]).build(params, settings["lr"], settings["weight_decay"],
                                                               own_keys(optimizer_section))
    warmup_steps = min(schedule_section["warmup_epochs"] * steps_per_epoch, phase_steps)
    own = own_keys(schedule_section)
    plugin = SCHEDULES.get(schedule_section["name"])
    if warmup_steps == 0:
        return optimizer, plugin.build(optimizer, phase_steps, steps_per_epoch, 0, own)
    warm = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupFactor(warmup_steps))
    main = plugin.build(optimizer, phase_steps - warmup_steps, steps_per_epoch, warmup_steps, own)
    return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])

