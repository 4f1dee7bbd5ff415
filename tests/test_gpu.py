"""The engine on a CUDA device (docs/gpu.md): a tiny run twice is bit-identical under determinism strict, the
prepared data and the augmented batches live on the device, the shipped methods run under strict, warn records an
op without a deterministic kernel by its whole name and strict stops on it, bf16 autocast is recorded. They run
where torch.cuda.is_available() and are skipped, with the reason, everywhere else. First run on a GPU on
2026-11-24 (H100, torch 2.11.0+cu130): see docs/gpu.md for what it found."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bench.data.base import load_prepared, prepare_dataset
from bench.errors import BenchError
from bench.train.augment import AUGMENTATIONS
from bench.train.engine import CUBLAS_CONFIGS, RunSpec, build, train_run
from bench.train.method import METHODS, register_method
from methods.joint import Joint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: torch.cuda.is_available() is False on this machine")

DATA = {"n_train": 128, "n_val": 32, "n_test": 64, "noise": 1.0, "split_seed": 0, "subset": None}
SETTINGS = {"model": {"name": "tiny_cnn", "widths": [8, 16, 16], "head_width": 8}, "epochs": 2, "batch_size": 32,
            "lr": 0.01, "weight_decay": 5e-4, "augment": False}  # tiny has no augmentation (see below)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    prepare_dataset("tiny", DATA, root)
    return root


def common(real_params, **modes) -> dict:
    return {**real_params["train"]["common"], "device": "cuda", "threads": 1, "grad_stats_every": 3, **modes}


def train(root, folder, real_params, method="joint", params=None, settings=SETTINGS, **modes) -> dict:
    spec = RunSpec("tiny", method, 0, params or {}, common(real_params, **modes), settings)
    return train_run(spec, load_prepared("tiny", root), folder, {"digest": "gpu-test"}, progress=False)


def outputs(folder) -> dict:
    return {"logits": torch.load(folder / "logits.pt", weights_only=True),
            "model": torch.load(folder / "model.pt", weights_only=True), "steps": pd.read_csv(folder / "steps.csv")}


def test_a_cuda_run_twice_is_bit_identical_under_strict(root, real_params, tmp_path):
    runs = []
    for attempt in ("a", "b"):
        metrics = train(root, tmp_path / attempt, real_params, determinism="strict")
        runs.append(outputs(tmp_path / attempt))
        env = metrics["environment"]
        assert env["device"].startswith("cuda") and env["cuda"] and env["deterministic_algorithms"]
        assert env["determinism"] == "strict" and env["cublas_workspace_config"] in CUBLAS_CONFIGS
        assert env["precision"] == "fp32" and env["nondeterministic_ops"] is None
    a, b = runs
    for split in ("val", "test"):
        assert torch.equal(a["logits"][split]["logits"], b["logits"][split]["logits"])
    assert all(torch.equal(a["model"]["model"][k], b["model"]["model"][k]) for k in a["model"]["model"])
    assert a["steps"].equals(b["steps"])


def test_the_prepared_data_and_the_batches_live_on_the_device(root, real_params):
    spec = RunSpec("tiny", "joint", 0, {}, common(real_params), SETTINGS)
    run = build(spec, load_prepared("tiny", root))
    train = run.data.splits["train"]
    assert train.array.device.type == "cuda" and run.labels.device.type == "cuda"
    assert next(run.model.parameters()).device.type == "cuda"
    assert train.batch(torch.arange(8)).device.type == "cuda"
    assert train.labels.device.type == "cpu"  # predictions are scored on the CPU


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS.names() if n != "none"])
def test_augmentation_runs_on_the_device_with_the_cpu_generator_draws(name):
    """The draws come from the run's CPU generator and move to the batch: the augmented CUDA batch equals the
    CPU one exactly (crops, flips and transpositions move values without arithmetic)."""
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    on_cpu = AUGMENTATIONS.get(name)(x, torch.Generator().manual_seed(1))
    on_cuda = AUGMENTATIONS.get(name)(x.cuda(), torch.Generator().manual_seed(1))
    assert on_cuda.device.type == "cuda" and torch.equal(on_cuda.cpu(), on_cpu)


class HistcJoint(Joint):
    """Joint training plus a `torch.histc` of exit 0's logits at every step: an op PyTorch documents as having no
    deterministic CUDA kernel (still so on torch 2.11, where the shipped models and methods need none: docs/gpu.md),
    so the test brings its own. Its alert names the op in several words, which the recorded name keeps whole."""

    def exit_losses(self, logits, targets, ctx):
        torch.histc(logits[0].detach().float(), bins=4)
        return super().exit_losses(logits, targets, ctx)


@pytest.fixture
def histc_method():
    name = "gpu_test_histc"
    register_method(name)(HistcJoint)
    yield name
    METHODS._entries.pop(name)  # test-only: not left in the registry for the tests that list every method


def test_warn_records_the_ops_without_a_deterministic_kernel_and_strict_stops_on_them(root, real_params, tmp_path,
                                                                                    histc_method):
    metrics = train(root, tmp_path / "warn", real_params, histc_method, determinism="warn")
    ops = metrics["environment"]["nondeterministic_ops"]
    assert metrics["environment"]["determinism"] == "warn" and ops == ["_histc_cuda with floating point input"], ops
    recorded = json.loads((tmp_path / "warn" / "metrics.json").read_text())["environment"]["nondeterministic_ops"]
    assert recorded == ops
    with pytest.raises(BenchError) as error:
        train(root, tmp_path / "strict", real_params, histc_method, determinism="strict")
    assert "histc" in str(error.value) and "train.common.determinism" in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "strict" / "metrics.json").exists()


@pytest.mark.parametrize("method, params", [("jei_dnn", {"bilevel_batch_count": 1}), ("joint", {})])
def test_the_shipped_methods_run_under_strict_and_repeat_bit_identically(root, real_params, tmp_path, method, params):
    """Seen on torch 2.11 + CUDA 13 (H100): every op these methods and tiny_cnn use has a deterministic kernel."""
    logits = []
    for attempt in ("a", "b"):
        metrics = train(root, tmp_path / attempt, real_params, method, params, determinism="strict")
        assert metrics["status"] == "ok"
        logits.append(torch.load(tmp_path / attempt / "logits.pt", weights_only=True)["test"]["logits"])
    assert torch.equal(*logits)


def test_bf16_autocast_trains_and_is_recorded(root, real_params, tmp_path):
    metrics = train(root, tmp_path / "bf16", real_params, precision="bf16")
    assert metrics["status"] == "ok" and metrics["environment"]["precision"] == "bf16"
    assert metrics["settings"]["common"]["precision"] == "bf16"
    logits = torch.load(tmp_path / "bf16" / "logits.pt", weights_only=True)["test"]["logits"]
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
