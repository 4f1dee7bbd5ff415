"""Multi-exit backbones and their per-exit cost."""

from bench.models.flops import exit_costs
from bench.models.multi_exit import MODELS, MultiExitNet, build_model, register_model

__all__ = ["MODELS", "MultiExitNet", "build_model", "exit_costs", "register_model"]
