"""Multi-exit backbones and their per-exit cost."""

from bench.models import resnet_scan, resnet_sdn  # noqa: F401  (registers resnet18_scan, resnet56_sdn)
from bench.models.flops import exit_costs
from bench.models.multi_exit import (MODELS, MultiExitNet, accepts, build_model, check_input_shape, input_shape,
                                     register_model)

__all__ = ["MODELS", "MultiExitNet", "accepts", "build_model", "check_input_shape", "exit_costs", "input_shape",
           "register_model"]
