"""eebench: a reproducible benchmark of training methods for early-exit neural networks."""

__version__ = "0.1.0"
