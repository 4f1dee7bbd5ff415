"""The training engine: outputs per run, determinism across processes, recorded environment."""

import json
import subprocess
import sys

import pandas as pd
import torch

from tests.conftest import write_params

VOLATILE = ("time", "environment")  # wall-clock times differ between runs; the rest must not


def run(*argv, cwd):
    result = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def test_run_outputs_and_determinism_across_processes(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)
    run("prepare", "--dataset", "tiny", cwd=in_tmp)
    outputs = []
    for attempt in range(2):
        run("train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet", cwd=in_tmp)
        folder = in_tmp / "results/runs/tiny/joint/seed0"
        metrics = json.loads((folder / "metrics.json").read_text())
        logits = torch.load(folder / "logits.pt", weights_only=True)
        steps = pd.read_csv(folder / "steps.csv")
        outputs.append((metrics, logits, steps))
        for name in ("checkpoint.pt", "model.pt", "grad_stats.csv", "epochs.csv"):
            assert (folder / name).is_file()
    (m1, l1, s1), (m2, l2, s2) = outputs
    assert {k: v for k, v in m1.items() if k not in VOLATILE} == {k: v for k, v in m2.items() if k not in VOLATILE}
    assert torch.equal(l1["test"]["logits"], l2["test"]["logits"]) and torch.equal(l1["val"]["logits"], l2["val"]["logits"])
    assert s1.equals(s2)

    env = m1["environment"]
    assert env["packages"]["torch"].startswith("2.13.0") and env["torch_threads"] == 2
    assert env["device"] == "cpu" and env["memory_format"] == "channels_last" and env["deterministic_algorithms"]
    assert env["cpu_capability"]
    assert m1["exit_costs"]["unit"].startswith("FLOPs") and len(m1["per_exit"]["test"]["accuracy"]) == 3
    assert l1["test"]["logits"].shape == (3, 128, 4)


def test_a_different_seed_gives_a_different_run(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)
    run("prepare", "--dataset", "tiny", cwd=in_tmp)
    for seed in ("0", "1"):
        run("train", "--dataset", "tiny", "--method", "joint", "--seed", seed, "--quiet", cwd=in_tmp)
    a = torch.load(in_tmp / "results/runs/tiny/joint/seed0/logits.pt", weights_only=True)
    b = torch.load(in_tmp / "results/runs/tiny/joint/seed1/logits.pt", weights_only=True)
    assert not torch.equal(a["test"]["logits"], b["test"]["logits"])


def test_gradient_statistics_are_logged_every_n_steps(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)  # grad_stats_every = 4, 2 epochs × 8 steps
    run("prepare", "--dataset", "tiny", cwd=in_tmp)
    run("train", "--dataset", "tiny", "--method", "branchynet", "--seed", "0", "--quiet", cwd=in_tmp)
    stats = pd.read_csv(in_tmp / "results/runs/tiny/branchynet/seed0/grad_stats.csv")
    assert sorted(stats["step"].unique()) == [0, 4, 8, 12]
    assert sorted(stats["exit"].unique()) == [0, 1, 2]
    assert (stats["samples_with_grad"] == stats["batch_size"]).all()  # branchynet: every sample, every exit
    assert (stats["backbone_grad_norm"] > 0).all() and (stats["head_grad_norm"] > 0).all()


def test_frozen_batchnorm_keeps_its_running_statistics():
    from bench.models import build_model
    from bench.train.engine import set_mode

    model = build_model("tiny_cnn", 1, 4, {})
    for p in model.blocks.parameters():
        p.requires_grad_(False)
    set_mode(True, model)
    frozen = [m for m in model.blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    live = [m for m in model.heads.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen and live and not any(m.training for m in frozen) and all(m.training for m in live)
    before = [m.running_mean.clone() for m in frozen]
    model(torch.randn(8, 1, 8, 8))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, frozen))
