"""The training engine: whole dataset in memory, batched augmentation, seeded and deterministic on CPU,
per-epoch validation of every exit, a checkpoint per epoch, per-exit gradient statistics."""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from bench.data import PreparedDataset, get_dataset
from bench.env import environment
from bench.errors import BenchError
from bench.io import load_torch, save_torch, write_csv, write_json
from bench.models import MultiExitNet, build_model, exit_costs
from bench.train.augment import AUGMENTATIONS
from bench.train import recipe
from bench.train.gradstats import per_exit_gradient_stats
from bench.train.method import Method, Phase, StepContext, all_parameters, get_method

CUBLAS_CONFIGS = (":4096:8", ":16:8")  # the workspace settings under which cuBLAS is deterministic
# torch's message for an op without a deterministic kernel (an error under strict, a warning under warn)
# torch's alert: "<caller> does not have a deterministic implementation, but you set ...", where the caller may be
# several words ("_histc_cuda with floating point input"): the whole caller names the op.
NONDETERMINISTIC = re.compile(r"(\S[^\n]*?) does not have a deterministic implementation")


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    method: str
    seed: int
    method_params: dict
    common: dict  # train.common
    settings: dict  # train.<dataset>


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("train.common.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def set_determinism(mode: str) -> None:
    """strict: every kernel deterministic, an op without a deterministic kernel raises (cuBLAS needs its workspace
    config set before its first use, so this runs before anything touches CUDA); warn: such an op warns instead
    (`NondeterministicOps` records which); off: torch's defaults. cuDNN never benchmarks (its choice varies)."""
    if mode == "strict" and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_CONFIGS:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_CONFIGS[0]
    torch.use_deterministic_algorithms(mode != "off", warn_only=mode == "warn")
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int, threads: int, determinism: str = "strict") -> torch.Generator:
    """Seed torch's global RNG (weights init) and return the generator that drives data order and
    augmentation (a CPU generator on every device: its draws are moved to the data); pin threads and set the
    determinism mode (strict: every kernel deterministic)."""
    set_determinism(determinism)
    torch.manual_seed(seed)  # seeds CUDA's generators too
    torch.set_num_threads(threads)
    gen = torch.Generator()
    gen.manual_seed(seed + 1)
    return gen


class NondeterministicOps:
    """While open (determinism: warn), captures warnings; `drain(into)` counts the ops that warned for lack of a
    deterministic kernel into the set `into`. Other warnings are shown as usual when it closes."""

    def __enter__(self) -> "NondeterministicOps":
        self.other: list = []
        self.catcher = warnings.catch_warnings(record=True)
        self.records = self.catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def drain(self, into: set[str]) -> None:
        for record in self.records:
            match = NONDETERMINISTIC.search(str(record.message))
            if match:
                into.add(match.group(1))
            elif not any(str(record.message) == str(o.message) and record.filename == o.filename for o in self.other):
                self.other.append(record)
        self.records.clear()

    def __exit__(self, *exc) -> None:
        self.drain(set())
        self.catcher.__exit__(*exc)
        for record in self.other:
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)


def strict_failure(exc: RuntimeError) -> BenchError | None:
    """The one-line error for an op without a deterministic kernel under determinism: strict, else None."""
    match = NONDETERMINISTIC.search(str(exc))
    if match is None:
        return None
    return BenchError(f"{match.group(1)} has no deterministic kernel and train.common.determinism is 'strict'; set "
                      "train.common.determinism to 'warn' (the run records which ops were not deterministic) or 'off'")


def autocast(device: torch.device, precision: str):
    """bf16 autocast of forward and loss (precision: bf16); fp32: nothing at all."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_mode(train: bool, *modules: torch.nn.Module | None) -> None:
    """Train/eval mode; in training, batch-norm layers whose parameters are all frozen stay in eval mode so
    that a frozen block (e.g. the backbone of `disjoint`) keeps its running statistics too."""
    for module in modules:
        if module is None:
            continue
        module.train(train)
        if train:
            for layer in module.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in layer.parameters()):
                    layer.eval()


@torch.no_grad()
def predict(method: Method, model: MultiExitNet, extra, split, device, memory_format, batch_size: int,
            precision: str = "fp32") -> torch.Tensor:
    """Logits of every exit on a whole split: [num_exits, N, num_classes] (float32, CPU)."""
    set_mode(False, model, extra)
    chunks = []
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        x = split.batch(idx).to(device, memory_format=memory_format)
        with autocast(device, precision):
            chunks.append(torch.stack(method.forward(model, extra, x)).float().cpu())
    return torch.cat(chunks, dim=1)


def exit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return (logits.argmax(-1) == labels).float().mean(1).tolist()


def load_checkpoint(path: Path, digest: str) -> dict | None:
    """The checkpoint at `path` if the run that wrote it had this very identity digest, else None."""
    if not path.is_file():
        return None
    state = load_torch(path, fix="delete it to restart the run from scratch", weights_only=False)
    if state.get("identity") != digest:
        print(f"ignoring {path}: written by a run with another identity (settings, data or code)", flush=True)
        return None
    return state


def run_record(spec: RunSpec) -> dict:
    return {"dataset": spec.dataset, "model": spec.settings["model"]["name"], "method": spec.method, "seed": spec.seed}


def fail(out_dir: Path, spec: RunSpec, reason: str, epoch: int, step: int) -> dict:
    """Stop a diverged run: a failure record in place of the metrics, so later stages report it as failed."""
    record = {"status": "failed", "reason": reason, "epoch": epoch + 1, "step": step, "run": run_record(spec)}
    for name in ("logits.pt", "model.pt", "checkpoint.pt"):
        (out_dir / name).unlink(missing_ok=True)
    write_json(out_dir / "metrics.json", record)
    print(f"FAILED {spec.method} on {spec.dataset} ({spec.settings['model']['name']}) seed {spec.seed}: {reason}", flush=True)
    return record


class Diverged(Exception):
    """A training step's loss or gradient norm says the run diverged: (reason, 0-based epoch, step)."""


@dataclass
class Run:
    """One run being trained: what `build` sets up and the parts below advance. The logs, the step and epoch
    counters and the training time are what a checkpoint saves besides the modules, optimiser and RNGs."""

    spec: RunSpec
    data: PreparedDataset
    device: torch.device
    memory_format: torch.memory_format
    gen: torch.Generator
    model: MultiExitNet
    method: Method
    extra: torch.nn.Module | None
    costs: dict
    augment: Callable
    labels: torch.Tensor  # the training labels, on the device
    optimizer_settings: dict  # train.<dataset>.optimizer and .schedule, resolved (bench/train/recipe.py)
    schedule_settings: dict
    step_log: list = field(default_factory=list)
    grad_log: list = field(default_factory=list)
    epoch_log: list = field(default_factory=list)
    nondeterministic_ops: set = field(default_factory=set)  # determinism: warn: the ops that warned
    step: int = 0
    done: int = 0  # epochs finished
    elapsed: float = 0.0  # training seconds so far (epochs only)
    started: float = 0.0  # perf_counter() at which `elapsed` was 0
    watch: NondeterministicOps | None = None  # determinism: warn: the open warning capture (train_run's)

    @property
    def common(self) -> dict:
        return self.spec.common

    @property
    def settings(self) -> dict:
        return self.spec.settings

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.splits["train"]) / self.batch_size)

    @property
    def precision(self) -> str:
        return self.common.get("precision", "fp32")

    @property
    def determinism(self) -> str:
        return self.common.get("determinism", "strict")

    def nondeterminism(self) -> list[str]:
        """The ops that warned for lack of a deterministic kernel so far (determinism: warn), sorted."""
        if self.watch is not None:
            self.watch.drain(self.nondeterministic_ops)
        return sorted(self.nondeterministic_ops)

    def label(self) -> str:
        return f"{self.spec.method}/{self.spec.dataset}/{self.spec.settings['model']['name']}/s{self.spec.seed}"


def build(spec: RunSpec, data: PreparedDataset) -> Run:
    """Seed, set the determinism mode, build the model, the method and its modules, count each exit's FLOPs,
    and move the modules and the prepared data to the device (once: batches are cut out there)."""
    common, settings = spec.common, spec.settings
    optimizer_settings, schedule_settings = recipe.resolve(settings, f"train.{spec.dataset}")
    gen = seed_everything(spec.seed, common["threads"], common.get("determinism", "strict"))
    device = resolve_device(common["device"])
    memory_format = torch.channels_last if common["channels_last"] else torch.contiguous_format
    train = data.splits["train"]
    sample = train.batch(torch.arange(1))
    model_params = {k: v for k, v in settings["model"].items() if k != "name"}
    model = build_model(settings["model"]["name"], sample.shape[1], data.num_classes, model_params)
    method: Method = get_method(spec.method)(spec.method_params, model.num_exits, data.num_classes)
    extra = method.extra_modules()
    costs = exit_costs(model, tuple(sample.shape[1:]), lambda x, upto: method.forward(model, extra, x, upto))
    method.cost_fractions = [f / costs["flops"][-1] for f in costs["flops"]]
    model.to(device, memory_format=memory_format)
    if extra is not None:
        extra.to(device)
    for split in data.splits.values():
        split.to(device)
    augment = AUGMENTATIONS.get(get_dataset(spec.dataset).augment if settings["augment"] else "none")
    return Run(spec, data, device, memory_format, gen, model, method, extra, costs, augment, train.labels.to(device),
               optimizer_settings, schedule_settings)


def resume(run: Run, out_dir: Path, digest: str) -> dict | None:
    """Restore `run` from `out_dir/checkpoint.pt` when that run had this identity digest; returns the checkpoint
    (its optimiser and scheduler are restored by `start_phase`), or None: the run starts from scratch."""
    state = load_checkpoint(out_dir / "checkpoint.pt", digest)
    if state is not None:
        run.model.load_state_dict(state["model"])
        if run.extra is not None:
            run.extra.load_state_dict(state["extra"])
        run.method.load_state_dict(state["method"])
        run.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if run.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        run.step_log, run.grad_log, run.epoch_log = state["step_log"], state["grad_log"], state["epoch_log"]
        run.nondeterministic_ops |= set(state.get("nondeterministic_ops") or [])
        run.step, run.done, run.elapsed = state["step"], state["epoch"], state["train_seconds"]
        print(f"resuming {run.label()} after epoch {run.done}/{run.epochs}", flush=True)
    run.started = time.perf_counter() - run.elapsed
    return state


def start_phase(run: Run, phase: Phase, state: dict | None = None) -> tuple[list, torch.optim.Optimizer, recipe.Scheduler]:
    """Freeze all but the phase's parameters; its optimiser and learning-rate schedule (train.<dataset>'s
    recipe over the phase's steps), restored from `state` when the phase is resumed."""
    params = phase.trainable(run.model, run.extra)
    trainable = {id(p) for p in params}
    for p in all_parameters(run.model, run.extra):
        p.requires_grad_(id(p) in trainable)
    optimizer, scheduler = recipe.build(params, run.settings, phase.epochs * run.steps_per_epoch, run.steps_per_epoch,
                                        f"train.{run.spec.dataset}")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return params, optimizer, scheduler


def train_epoch(run: Run, phase: Phase, epoch: int, phase_epoch: int, params: list, optimizer, scheduler,
                progress: bool = False) -> StepContext:
    """One epoch of optimiser steps (0-based `epoch` of the run, `phase_epoch` of the phase); returns the last
    step's context. Raises Diverged on a non-finite loss or an exploding gradient."""
    spec, common, model, extra, method = run.spec, run.common, run.model, run.extra, run.method
    train, batch_size = run.data.splits["train"], run.batch_size
    set_mode(True, model, extra)
    order = torch.randperm(len(train), generator=run.gen)
    bar = tqdm(range(run.steps_per_epoch), desc=f"{run.label()} {phase.name} epoch {epoch + 1}/{run.epochs}",
               disable=None if progress else True, leave=False, unit="step")  # disable=None: a bar on a terminal
    ctx, pending, steps = None, [], []
    for b in bar:
        idx = order[b * batch_size:(b + 1) * batch_size]
        x = run.augment(train.batch(idx), run.gen).to(run.device, memory_format=run.memory_format)
        y = run.labels[idx]
        ctx = StepContext(epoch=epoch, num_epochs=run.epochs, step=run.step, phase=phase.name,
                          phase_epoch=phase_epoch, phase_epochs=phase.epochs, model=model, extra=extra,
                          inputs=x, lr=scheduler.get_last_lr()[0])
        with autocast(run.device, run.precision):
            logits = method.forward(model, extra, x)
            losses = method.exit_losses(logits, y, ctx)
            loss = losses.sum()
        if run.step % common["grad_stats_every"] == 0:
            for row in per_exit_gradient_stats(model, logits, losses):
                run.grad_log.append({"step": run.step, "epoch": epoch + 1, "phase": phase.name, **row})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        # Kept on the device and read once per epoch (no host sync per step, which stalls a GPU). In float64,
        # which holds every float16/bfloat16/float32 value exactly, so the log has the values .item() gave.
        pending.append(torch.cat([loss.detach().double().reshape(1), grad_norm.double().reshape(1),
                                  losses.detach().double()]))
        optimizer.step()
        scheduler.step()
        steps.append((run.step, scheduler.get_last_lr()[0]))
        run.step += 1
        if b % 20 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    log_steps(run, phase, epoch, pending, steps)
    return ctx


def log_steps(run: Run, phase: Phase, epoch: int, pending: list, steps: list) -> None:
    """Append an epoch's steps to the step log, or raise Diverged at its first step whose loss was not finite
    or whose gradient norm was not finite or above train.common.max_grad_norm. Checked once per epoch, before
    anything is checkpointed: a diverged epoch is never saved, and its run fails as it did when checked per
    step (the weights it left behind are discarded with it)."""
    if not pending:
        return
    values = torch.stack(pending).cpu().tolist()
    limit, dataset = run.common["max_grad_norm"], run.spec.dataset
    for (step, lr), (loss, grad_norm, *losses) in zip(steps, values):
        if not math.isfinite(loss):
            raise Diverged(f"training diverged: loss is {loss} at epoch {epoch + 1} step {step}; lower "
                           f"train.{dataset}.lr", epoch, step)
        if not math.isfinite(grad_norm) or grad_norm > limit:
            raise Diverged(f"gradients exploded: norm {grad_norm:.3g} > train.common.max_grad_norm = "
                           f"{limit:g} at epoch {epoch + 1} step {step}; lower train.{dataset}.lr", epoch, step)
        run.step_log.append({"step": step, "epoch": epoch + 1, "phase": phase.name, "lr": lr, "loss": loss,
                             "grad_norm": grad_norm, **{f"loss_exit{k}": v for k, v in enumerate(losses)}})


def end_epoch(run: Run, phase: Phase, epoch: int, ctx: StepContext, epoch_start: float) -> None:
    """Validate every exit after the epoch, let the method see the validation logits, log and count the epoch."""
    val = run.data.splits["val"]
    val_logits = predict(run.method, run.model, run.extra, val, run.device, run.memory_format,
                         run.common["eval_batch_size"], run.precision)
    val_acc = exit_accuracy(val_logits, val.labels)
    run.method.epoch_end(run.extra, val_logits, val.labels, ctx)
    run.epoch_log.append({"epoch": epoch + 1, "phase": phase.name, "seconds": time.perf_counter() - epoch_start,
                          **{f"val_acc_exit{k}": a for k, a in enumerate(val_acc)}})
    accs = " ".join(f"{a:.4f}" for a in val_acc)
    print(f"{run.label()} epoch {epoch + 1}/{run.epochs} ({phase.name}): val acc per exit {accs} "
          f"({run.epoch_log[-1]['seconds']:.1f}s)", flush=True)
    run.done = epoch + 1
    run.elapsed = time.perf_counter() - run.started


def checkpoint(run: Run, out_dir: Path, digest: str, phase_index: int, optimizer, scheduler) -> None:
    """Everything a killed run needs to continue bit-identically after the last finished epoch."""
    save_torch(out_dir / "checkpoint.pt", {
        "identity": digest, "epoch": run.done, "phase_index": phase_index, "step": run.step,
        "model": run.model.state_dict(), "extra": run.extra.state_dict() if run.extra is not None else None,
        "method": run.method.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": run.gen.get_state(), "torch_rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state_all()} if run.device.type == "cuda" else {}),
        **({"nondeterministic_ops": run.nondeterminism()} if run.determinism == "warn" else {}),
        "step_log": run.step_log, "grad_log": run.grad_log, "epoch_log": run.epoch_log,
        "train_seconds": run.elapsed})


def finish(run: Run, out_dir: Path, identity: dict) -> dict:
    """Predict validation and test with every exit and write logits.pt, model.pt, the logs and metrics.json."""
    spec, common, data, method, extra = run.spec, run.common, run.data, run.method, run.extra
    train_seconds = run.elapsed  # epochs only: resuming a finished run reproduces its record exactly
    logits = {s: predict(method, run.model, extra, data.splits[s], run.device, run.memory_format,
                         common["eval_batch_size"], run.precision) for s in ("val", "test")}
    with torch.no_grad():
        extras = {s: {k: v.float().cpu() for k, v in method.eval_outputs(extra, logits[s].to(run.device)).items()}
                  for s in logits}
    save_torch(out_dir / "logits.pt", {s: {"logits": logits[s], "labels": data.splits[s].labels, "extras": extras[s]}
                                       for s in logits})
    save_torch(out_dir / "model.pt", {"model": run.model.state_dict(),
                                      "extra": extra.state_dict() if extra is not None else None})
    import pandas as pd

    write_csv(out_dir / "steps.csv", pd.DataFrame(run.step_log))
    write_csv(out_dir / "grad_stats.csv", pd.DataFrame(run.grad_log))
    write_csv(out_dir / "epochs.csv", pd.DataFrame(run.epoch_log))
    metrics = {
        "status": "ok",
        "run": run_record(spec),
        "method": method.metadata(),
        "settings": {"common": common, "dataset": {**spec.settings, "optimizer": run.optimizer_settings,
                                                   "schedule": run.schedule_settings}},  # the recipe, resolved
        "num_exits": run.model.num_exits,
        "exit_costs": run.costs,
        "per_exit": {s: {"accuracy": exit_accuracy(logits[s], data.splits[s].labels)} for s in logits},
        "time": {"train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(run.epochs, 1),
                 "epochs": run.epochs, "steps": run.step},
        "data": {"manifest_sha256": data.manifest["data_sha256"], "sizes": data.manifest["sizes"]},
        "environment": environment(run.device, "channels_last" if common["channels_last"] else "contiguous",
                                   determinism=run.determinism, precision=run.precision,
                                   nondeterministic_ops=run.nondeterminism() if run.determinism == "warn" else None),
        "identity": identity,
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def train_run(spec: RunSpec, data: PreparedDataset, out_dir: Path, identity: dict, progress: bool = True) -> dict:
    """Train one run: build, resume, one epoch after another (each checkpointed), finish. Resumes from
    `out_dir/checkpoint.pt` when it was written by this very run (a killed process loses at most the epoch in
    progress, and the result is bit-identical to an uninterrupted run). `identity` is the run's identity from
    its caller (bench/identity.py: {"digest", "components", ...}): its digest decides whether a checkpoint is
    resumed, and the whole of it is recorded in metrics.json. The prepared splits move to the device."""
    warn = spec.common.get("determinism", "strict") == "warn"
    try:
        with NondeterministicOps() if warn else contextlib.nullcontext() as watch:
            run = build(spec, data)
            run.watch = watch
            digest = identity["digest"]
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "metrics.json").unlink(missing_ok=True)  # a stale record must not outlive this run
            state = resume(run, out_dir, digest)
            epoch = 0
            for phase_index, phase in enumerate(run.method.phases(run.epochs)):
                if epoch + phase.epochs <= run.done:  # finished before the checkpoint
                    epoch += phase.epochs
                    continue
                first = run.done - epoch if run.done > epoch else 0
                params, optimizer, scheduler = start_phase(run, phase, state if first > 0 else None)
                epoch += first
                for phase_epoch in range(first, phase.epochs):
                    epoch_start = time.perf_counter()
                    try:
                        ctx = train_epoch(run, phase, epoch, phase_epoch, params, optimizer, scheduler, progress)
                    except Diverged as diverged:
                        return fail(out_dir, spec, *diverged.args)
                    end_epoch(run, phase, epoch, ctx, epoch_start)
                    epoch += 1
                    checkpoint(run, out_dir, digest, phase_index, optimizer, scheduler)
            return finish(run, out_dir, identity)
    except RuntimeError as exc:
        error = strict_failure(exc)
        if error is None:
            raise
        raise error from None
