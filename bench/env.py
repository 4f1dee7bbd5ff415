"""The environment recorded with every result: versions, threads, device, CPU capability, git commit and the
SHA-256 of any uncommitted changes (bench/provenance.py)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from bench.provenance import git_state

PACKAGES = ["torch", "numpy", "scipy", "pandas", "optuna", "dvc", "tensorly", "eebench"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(device: torch.device, memory_format: str, determinism: str = "strict", precision: str = "fp32",
                nondeterministic_ops: list[str] | None = None) -> dict:
    """`determinism`, `precision`: train.common's modes the run trained under; `nondeterministic_ops`: under
    determinism warn, the ops that warned for lack of a deterministic kernel (None otherwise)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "memory_format": memory_format,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "determinism": determinism,
        "nondeterministic_ops": nondeterministic_ops,
        "precision": precision,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if device.type == "cuda" else None,
        "packages": package_versions(),
        **git_state(),  # git_commit (sha, "-dirty" if uncommitted changes) and git_diff_sha256 (None if clean)
    }
