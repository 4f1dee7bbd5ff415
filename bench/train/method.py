"""The method plugin API. A training method is a `Method` subclass in its own file under `methods/`,
registered with `@register_method("name")`. Third-party packages add methods through the entry-point
group `eebench.methods` (the entry point names a module that registers its classes on import)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, ClassVar

import torch
from torch import nn

from bench.config_check import check_section
from bench.errors import BenchError
from bench.registry import Registry


@dataclass(frozen=True)
class StepContext:
    epoch: int  # 0-based, within the whole run
    num_epochs: int
    step: int  # optimiser steps so far
    phase: str
    phase_epoch: int = 0  # 0-based, within the current phase
    phase_epochs: int = 1
    model: nn.Module | None = None  # the network being trained (for methods that need more than logits)
    extra: nn.Module | None = None  # the method's own modules (from `extra_modules`)
    inputs: torch.Tensor | None = None  # the (augmented) input batch
    lr: float = 0.0  # current learning rate


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own optimiser: `trainable(model, extra)` picks the parameters."""

    name: str
    epochs: int
    trainable: Callable[[nn.Module, nn.Module | None], list[nn.Parameter]]


def all_parameters(model: nn.Module, extra: nn.Module | None) -> list[nn.Parameter]:
    return list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])


def check_range(method: "Method", key: str, ok: Callable[[float], bool], allowed: str) -> None:
    """A one-line BenchError naming methods.<name>.<key>, the allowed range and the fix when `ok(value)` fails."""
    value = method.params[key]
    if not ok(value):
        raise BenchError(f"methods.{method.name}.{key} must be {allowed}, got {value!r}; set "
                         f"methods.{method.name}.{key} in params.yaml to a value {allowed}")


class Method:
    """Base class. Subclasses set `defaults` (every parameter with its default; types are checked
    against them), `source` (paper + authors' code), `choices` (every decision that is ours rather
    than the source's; recorded in each run's metadata), and implement `exit_losses`."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    source: ClassVar[str] = ""
    choices: ClassVar[dict] = {}
    exit_policy: ClassVar[str] = "max_softmax"
    not_state: ClassVar[tuple[str, ...]] = ()  # non-plain attributes the subclass's own state_dict saves

    def __init__(self, params: dict | None, num_exits: int, num_classes: int):
        self.params = check_section(self.defaults, params, f"methods.{self.name}")
        if "label_smoothing" in self.params:
            check_range(self, "label_smoothing", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        self.num_exits, self.num_classes = num_exits, num_classes
        # cumulative FLOPs of each exit / the deepest exit's; set by the engine once costs are counted
        self.cost_fractions: list[float] = [(k + 1) / num_exits for k in range(num_exits)]

    def extra_modules(self) -> nn.Module | None:
        """Modules the method trains besides the network (e.g. learned gates). Built once, after __init__."""
        return None

    def forward(self, model: nn.Module, extra: nn.Module | None, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Every exit's logits (0..upto). Override when the method changes what an exit computes (e.g.
        ensembles of earlier exits); the per-exit FLOPs are counted through this method too."""
        return model(x, upto=upto)

    def eval_outputs(self, extra: nn.Module | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-sample outputs saved beside the logits for exit policies, from logits [K, N, C]
        (e.g. learned gate probabilities [K, N]). Default: none."""
        return {}

    def epoch_end(self, extra: nn.Module | None, val_logits: torch.Tensor, val_labels: torch.Tensor, ctx: StepContext) -> None:
        """Called after each epoch with every exit's validation logits [K, N, C] (e.g. to refit class
        weights from validation statistics). Must not touch the test split."""

    def phases(self, epochs: int) -> list[Phase]:
        return [Phase("joint", epochs, all_parameters)]

    def exit_losses(self, logits: list[torch.Tensor], targets: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Per-exit loss terms (shape [num_exits]) whose sum is the loss that is minimised. Term k is
        what exit k's classifier contributes; the gradient statistics are measured per term."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The method's own training state, saved in every checkpoint: every attribute holding plain values or
        tensors. Any other attribute (an optimiser, a generator, a module reference) is an error unless the
        subclass lists it in `not_state` AND checkpoints it itself by overriding this pair (e.g. `l2w_den`'s
        meta-optimiser), so no state can silently restart on resume."""
        plain = (int, float, str, bool, list, tuple, dict, torch.Tensor, type(None))
        state, other = {}, []
        for key, value in vars(self).items():
            if isinstance(value, plain):
                state[key] = value
            elif key not in self.not_state:
                other.append(f"{key} ({type(value).__name__})")
        if other:
            raise TypeError(f"method {self.name!r} holds state a checkpoint cannot capture: {', '.join(other)}; "
                            f"override state_dict/load_state_dict to save it and list it in `not_state`")
        return state

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)

    def metadata(self) -> dict:
        """Recorded in each run's metrics.json: the method's source, our choices and resolved params."""
        return {**self.describe(), "params": self.params}

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "source": cls.source, "choices": cls.choices, "defaults": cls.defaults,
                "exit_policy": cls.exit_policy}


def discover() -> None:
    import methods

    for module in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{module.name}")
    for entry_point in entry_points(group="eebench.methods"):
        entry_point.load()


METHODS: Registry[type[Method]] = Registry("method", discover=discover)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return add


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)
