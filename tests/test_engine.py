"""The training engine: outputs per run, determinism across processes, recorded environment."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
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
        folder = in_tmp / "results/runs/tiny/joint/tiny_cnn/seed0"
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
    a = torch.load(in_tmp / "results/runs/tiny/joint/tiny_cnn/seed0/logits.pt", weights_only=True)
    b = torch.load(in_tmp / "results/runs/tiny/joint/tiny_cnn/seed1/logits.pt", weights_only=True)
    assert not torch.equal(a["test"]["logits"], b["test"]["logits"])


def test_gradient_statistics_are_logged_every_n_steps(in_tmp, tiny_params):
    write_params(in_tmp, tiny_params)  # grad_stats_every = 4, 2 epochs × 8 steps
    run("prepare", "--dataset", "tiny", cwd=in_tmp)
    run("train", "--dataset", "tiny", "--method", "branchynet", "--seed", "0", "--quiet", cwd=in_tmp)
    stats = pd.read_csv(in_tmp / "results/runs/tiny/branchynet/tiny_cnn/seed0/grad_stats.csv")
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


# --- the engine's parts, the run record and the determinism/precision modes (in-process, tiny data) ----------

ENGINE_DATA = {"n_train": 64, "n_val": 32, "n_test": 32, "noise": 1.0, "split_seed": 0, "subset": None}
ENGINE_SETTINGS = {"model": {"name": "tiny_cnn", "widths": [4, 8, 8], "head_width": 4}, "epochs": 2, "batch_size": 32,
                   "lr": 0.01, "weight_decay": 5e-4, "augment": False}


def engine_run(tmp_path, real_params, name="run", method="joint", settings=ENGINE_SETTINGS, **modes):
    from bench.data.base import load_prepared, prepare_dataset
    from bench.train.engine import RunSpec, train_run

    if not (tmp_path / "data" / "tiny").exists():
        prepare_dataset("tiny", ENGINE_DATA, tmp_path / "data")
    common = {**real_params["train"]["common"], "threads": 1, "grad_stats_every": 3, **modes}
    spec = RunSpec("tiny", method, 0, {}, common, settings)
    metrics = train_run(spec, load_prepared("tiny", tmp_path / "data"), tmp_path / name, {"digest": name}, progress=False)
    return metrics, torch.load(tmp_path / name / "logits.pt", weights_only=True)


def test_the_engine_parts_compose_to_train_run(tmp_path, real_params):
    """build → resume → start_phase → train_epoch / end_epoch / checkpoint → finish, called one by one as a
    test or benchmark would, write what train_run writes."""
    from bench.data.base import load_prepared
    from bench.train import engine

    metrics, logits = engine_run(tmp_path, real_params, "composed", "branchynet",
                                 {**ENGINE_SETTINGS, "epochs": 4})  # default branchynet: one phase
    spec = engine.RunSpec("tiny", "branchynet", 0, {}, {**real_params["train"]["common"], "threads": 1,
                                                         "grad_stats_every": 3}, {**ENGINE_SETTINGS, "epochs": 4})
    run = engine.build(spec, load_prepared("tiny", tmp_path / "data"))
    folder = tmp_path / "by_parts"
    folder.mkdir()
    assert engine.resume(run, folder, "by-parts") is None  # nothing to resume
    (phase,) = run.method.phases(run.epochs)
    params, optimizer, scheduler = engine.start_phase(run, phase)
    for epoch in range(run.epochs):
        ctx = engine.train_epoch(run, phase, epoch, epoch, params, optimizer, scheduler)
        engine.end_epoch(run, phase, epoch, ctx, epoch_start=0.0)
        engine.checkpoint(run, folder, "by-parts", 0, optimizer, scheduler)
    parts = engine.finish(run, folder, {"digest": "composed"})
    by_parts = torch.load(folder / "logits.pt", weights_only=True)
    assert all(torch.equal(logits[s]["logits"], by_parts[s]["logits"]) for s in ("val", "test"))
    drop = ("time", "environment")
    assert {k: v for k, v in parts.items() if k not in drop} == {k: v for k, v in metrics.items() if k not in drop}
    assert pd.read_csv(folder / "steps.csv").equals(pd.read_csv(tmp_path / "composed" / "steps.csv"))


def parts_run(tmp_path, real_params, scale_at=None):
    """A 2-epoch joint run through the engine's parts, its exit losses read with .item() at every step as a
    per-step loop would (the reference), and scaled by `scale_at = (step, factor)` at that step."""
    from bench.data.base import load_prepared, prepare_dataset
    from bench.train import engine

    if not (tmp_path / "data" / "tiny").exists():
        prepare_dataset("tiny", ENGINE_DATA, tmp_path / "data")
    spec = engine.RunSpec("tiny", "joint", 0, {}, {**real_params["train"]["common"], "threads": 1},
                          {**ENGINE_SETTINGS, "batch_size": 16})
    run = engine.build(spec, load_prepared("tiny", tmp_path / "data"))
    seen, exit_losses = [], run.method.exit_losses

    def read_each_step(logits, y, ctx):
        losses = exit_losses(logits, y, ctx)
        if scale_at is not None and ctx.step == scale_at[0]:
            losses = losses * scale_at[1]
        seen.append((ctx.step, losses.sum().item(), losses.tolist(), ctx.lr))
        return losses

    run.method.exit_losses = read_each_step
    (phase,) = run.method.phases(run.epochs)
    params, optimizer, scheduler = engine.start_phase(run, phase)
    for epoch in range(run.epochs):
        ctx = engine.train_epoch(run, phase, epoch, epoch, params, optimizer, scheduler)
        engine.end_epoch(run, phase, epoch, ctx, epoch_start=0.0)
    return run, seen


def test_the_step_log_read_once_per_epoch_holds_each_steps_own_values(tmp_path, real_params):
    """The engine reads its step log from the device once per epoch (no host sync per step): the values are
    exactly those .item() gave at each step, in order, with the learning rate after the step."""
    run, seen = parts_run(tmp_path, real_params)
    assert len(run.step_log) == len(seen) == 2 * run.steps_per_epoch == 8
    for row, (step, loss, losses, _) in zip(run.step_log, seen):
        assert (row["step"], row["loss"]) == (step, loss)  # exact: no rounding on the way
        assert [row[f"loss_exit{k}"] for k in range(len(losses))] == losses
        assert math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
    assert [row["lr"] for row in run.step_log[:-1]] == [lr for *_, lr in seen[1:]]  # the next step's lr


@pytest.mark.parametrize("factor, message", [(float("nan"), "training diverged: loss is nan at epoch 2 step 5"),
                                             (1e12, "gradients exploded: norm")])
def test_a_bad_step_is_caught_at_that_step_within_its_epoch(tmp_path, real_params, factor, message):
    """Divergence is checked once per epoch, yet the error names the first bad step, the steps before it are
    logged, and the epoch ends there (nothing after it is validated or checkpointed)."""
    from bench.train.engine import Diverged

    with pytest.raises(Diverged, match=message) as caught:
        parts_run(tmp_path, real_params, scale_at=(5, factor))
    reason, epoch, step = caught.value.args
    assert reason.endswith("at epoch 2 step 5; lower train.tiny.lr") and (epoch, step) == (1, 5)


def test_the_run_record_names_the_model_and_the_environment_the_modes(tmp_path, real_params):
    metrics, strict = engine_run(tmp_path, real_params, "strict")
    assert metrics["run"] == {"dataset": "tiny", "model": "tiny_cnn", "method": "joint", "seed": 0}
    env = metrics["environment"]
    assert (env["determinism"], env["precision"], env["nondeterministic_ops"]) == ("strict", "fp32", None)
    assert metrics["settings"]["dataset"]["optimizer"]["name"] == "adamw"  # the recipe is recorded
    # warn on the CPU: tiny_cnn has no op without a deterministic kernel, so nothing is recorded and the
    # kernels (hence the weights) are the same as under strict
    metrics, warn = engine_run(tmp_path, real_params, "warn", determinism="warn")
    assert (metrics["environment"]["determinism"], metrics["environment"]["nondeterministic_ops"]) == ("warn", [])
    assert all(torch.equal(strict[s]["logits"], warn[s]["logits"]) for s in ("val", "test"))


def test_bf16_autocast_trains_and_is_recorded(tmp_path, real_params):
    _, fp32 = engine_run(tmp_path, real_params, "fp32")
    metrics, bf16 = engine_run(tmp_path, real_params, "bf16", precision="bf16")
    assert metrics["status"] == "ok" and metrics["environment"]["precision"] == "bf16"
    assert bf16["test"]["logits"].dtype == torch.float32 and torch.isfinite(bf16["test"]["logits"]).all()
    assert not torch.equal(bf16["test"]["logits"], fp32["test"]["logits"])  # autocast really ran in bf16


def put_in_the_loss(monkeypatch):
    """Make joint's loss call Tensor.put_ (accumulate=False): an op without a deterministic kernel, on CPU too."""
    from bench.train.method import get_method

    cls = get_method("joint")
    real = cls.exit_losses

    def exit_losses(self, logits, targets, ctx):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
        return real(self, logits, targets, ctx)

    monkeypatch.setattr(cls, "exit_losses", exit_losses)


def test_strict_stops_with_one_line_on_an_op_without_a_deterministic_kernel(tmp_path, real_params, monkeypatch):
    from bench.errors import BenchError

    put_in_the_loss(monkeypatch)
    with pytest.raises(BenchError) as error:
        engine_run(tmp_path, real_params, "strict")
    message = str(error.value)
    assert message.startswith("put_ has no deterministic kernel") and "determinism to 'warn'" in message
    assert "\n" not in message and not (tmp_path / "strict" / "metrics.json").exists()


def test_warn_records_which_ops_warned_and_keeps_them_through_a_resume(tmp_path, real_params, monkeypatch, recwarn):
    put_in_the_loss(monkeypatch)
    metrics, _ = engine_run(tmp_path, real_params, "warn", determinism="warn")
    assert metrics["environment"]["nondeterministic_ops"] == ["put_"]
    assert not [w for w in recwarn if "deterministic" in str(w.message)]  # captured, not shown
    checkpoint = torch.load(tmp_path / "warn" / "checkpoint.pt", weights_only=False)
    assert checkpoint["nondeterministic_ops"] == ["put_"]
    monkeypatch.undo()  # the resumed run (nothing left to train) keeps the record of the epochs before it
    metrics, _ = engine_run(tmp_path, real_params, "warn", determinism="warn")
    assert metrics["environment"]["nondeterministic_ops"] == ["put_"]


def test_an_op_named_in_several_words_is_recorded_whole():
    """torch's alert is "<caller> does not have a deterministic implementation, but you set ..."; for histc on a GPU
    the caller is several words (this message as an H100 with torch 2.11 raised it). The last word, "input", named
    the op before."""
    import warnings

    from bench.train.engine import NondeterministicOps, strict_failure

    alert = ("_histc_cuda with floating point input does not have a deterministic implementation, but you set "
             "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this operation, or "
             "you can use the 'warn_only=True' option, if that's acceptable for your application.")
    assert str(strict_failure(RuntimeError(alert))).startswith("_histc_cuda with floating point input has no "
                                                                "deterministic kernel")
    assert strict_failure(RuntimeError("CUDA error: out of memory")) is None
    ops: set[str] = set()
    with NondeterministicOps() as watch:
        warnings.warn(alert)
        warnings.warn("put_ does not have a deterministic implementation, but you set 'torch.use_deterministic_a")
        watch.drain(ops)
    assert ops == {"_histc_cuda with floating point input", "put_"}


def test_off_turns_deterministic_algorithms_off_and_strict_back_on():
    from bench.train.engine import set_determinism

    try:
        set_determinism("off")
        assert not torch.are_deterministic_algorithms_enabled()
        set_determinism("warn")
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        set_determinism("strict")
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: the error cannot happen")
def test_device_cuda_without_cuda_is_one_line(tmp_path, real_params):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="^train.common.device is 'cuda' but no CUDA device is available; use 'cpu'"):
        engine_run(tmp_path, real_params, "cuda", device="cuda")
