"""The training engine: whole dataset in memory, batched augmentation, seeded and deterministic on CPU,
per-epoch validation of every exit, a checkpoint per epoch, per-exit gradient statistics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bench.data import PreparedDataset, get_dataset
from bench.env import environment
from bench.errors import BenchError
from bench.io import load_torch, save_torch, write_csv, write_json
from bench.models import MultiExitNet, build_model, exit_costs
from bench.train.augment import AUGMENTATIONS
from bench.train.gradstats import per_exit_gradient_stats
from bench.train.method import Method, StepContext, all_parameters, get_method


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


def seed_everything(seed: int, threads: int) -> torch.Generator:
    """Seed torch's global RNG (weights init) and return the generator that drives data order and
    augmentation; pin threads and make every kernel deterministic."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator()
    gen.manual_seed(seed + 1)
    return gen


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
def predict(method: Method, model: MultiExitNet, extra, split, device, memory_format, batch_size: int) -> torch.Tensor:
    """Logits of every exit on a whole split: [num_exits, N, num_classes] (float32, CPU)."""
    set_mode(False, model, extra)
    chunks = []
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        x = split.batch(idx).to(device, memory_format=memory_format)
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


def fail(out_dir: Path, spec: RunSpec, reason: str, epoch: int, step: int) -> dict:
    """Stop a diverged run: a failure record in place of the metrics, so later stages report it as failed."""
    record = {"status": "failed", "reason": reason, "epoch": epoch + 1, "step": step,
              "run": {"dataset": spec.dataset, "method": spec.method, "seed": spec.seed}}
    for name in ("logits.pt", "model.pt", "checkpoint.pt"):
        (out_dir / name).unlink(missing_ok=True)
    write_json(out_dir / "metrics.json", record)
    print(f"FAILED {spec.method} on {spec.dataset} seed {spec.seed}: {reason}", flush=True)
    return record


def train_run(spec: RunSpec, data: PreparedDataset, out_dir: Path, identity: dict, progress: bool = True) -> dict:
    """Train one run; resume from `out_dir/checkpoint.pt` when it was written by this very run (a killed
    process loses at most the epoch in progress, and the result is bit-identical to an uninterrupted run).
    `identity` is the run's identity from its caller (bench/identity.py: {"digest", "components", ...}): its
    digest decides whether a checkpoint is resumed, and the whole of it is recorded in metrics.json."""
    common, settings = spec.common, spec.settings
    gen = seed_everything(spec.seed, common["threads"])
    device = resolve_device(common["device"])
    memory_format = torch.channels_last if common["channels_last"] else torch.contiguous_format
    train, val = data.splits["train"], data.splits["val"]
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
    augment = AUGMENTATIONS.get(get_dataset(spec.dataset).augment if settings["augment"] else "none")
    labels = train.labels
    batch_size, epochs = settings["batch_size"], settings["epochs"]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    digest = identity["digest"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # a stale record must not outlive this run

    step_log, grad_log, epoch_log = [], [], []
    step, done, elapsed = 0, 0, 0.0
    state = load_checkpoint(out_dir / "checkpoint.pt", digest)
    if state is not None:
        model.load_state_dict(state["model"])
        if extra is not None:
            extra.load_state_dict(state["extra"])
        method.load_state_dict(state["method"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step_log, grad_log, epoch_log = state["step_log"], state["grad_log"], state["epoch_log"]
        step, done, elapsed = state["step"], state["epoch"], state["train_seconds"]
        print(f"resuming {spec.method}/{spec.dataset}/s{spec.seed} after epoch {done}/{epochs}", flush=True)
    started = time.perf_counter() - elapsed
    epoch = 0
    for phase_index, phase in enumerate(method.phases(epochs)):
        if epoch + phase.epochs <= done:  # finished before the checkpoint
            epoch += phase.epochs
            continue
        params = phase.trainable(model, extra)
        trainable = {id(p) for p in params}
        for p in all_parameters(model, extra):
            p.requires_grad_(id(p) in trainable)
        optimizer = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase.epochs * steps_per_epoch)
        first = done - epoch if done > epoch else 0
        if first > 0:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        epoch += first
        for phase_epoch in range(first, phase.epochs):
            set_mode(True, model, extra)
            epoch_start = time.perf_counter()
            order = torch.randperm(len(train), generator=gen)
            bar = tqdm(range(steps_per_epoch), desc=f"{spec.method}/{spec.dataset}/s{spec.seed} {phase.name} "
                       f"epoch {epoch + 1}/{epochs}", disable=None if progress else True, leave=False,
                       unit="step")  # disable=None: a bar on a terminal, none in CI logs
            for b in bar:
                idx = order[b * batch_size:(b + 1) * batch_size]
                x = augment(train.batch(idx), gen).to(device, memory_format=memory_format)
                y = labels[idx].to(device)
                ctx = StepContext(epoch=epoch, num_epochs=epochs, step=step, phase=phase.name,
                                  phase_epoch=phase_epoch, phase_epochs=phase.epochs, model=model, extra=extra,
                                  inputs=x, lr=scheduler.get_last_lr()[0])
                logits = method.forward(model, extra, x)
                losses = method.exit_losses(logits, y, ctx)
                loss = losses.sum()
                if not torch.isfinite(loss):
                    return fail(out_dir, spec, f"training diverged: loss is {loss.item()} at epoch {epoch + 1} step "
                                f"{step}; lower train.{spec.dataset}.lr", epoch, step)
                if step % common["grad_stats_every"] == 0:
                    for row in per_exit_gradient_stats(model, logits, losses):
                        grad_log.append({"step": step, "epoch": epoch + 1, "phase": phase.name, **row})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                if not torch.isfinite(grad_norm) or grad_norm > common["max_grad_norm"]:
                    return fail(out_dir, spec, f"gradients exploded: norm {grad_norm.item():.3g} > "
                                f"train.common.max_grad_norm = {common['max_grad_norm']:g} at epoch {epoch + 1} "
                                f"step {step}; lower train.{spec.dataset}.lr", epoch, step)
                optimizer.step()
                scheduler.step()
                step_log.append({"step": step, "epoch": epoch + 1, "phase": phase.name,
                                 "lr": scheduler.get_last_lr()[0], "loss": loss.item(), "grad_norm": grad_norm.item(),
                                 **{f"loss_exit{k}": v for k, v in enumerate(losses.tolist())}})
                step += 1
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            val_logits = predict(method, model, extra, val, device, memory_format, common["eval_batch_size"])
            val_acc = exit_accuracy(val_logits, val.labels)
            method.epoch_end(extra, val_logits, val.labels, ctx)
            epoch_log.append({"epoch": epoch + 1, "phase": phase.name, "seconds": time.perf_counter() - epoch_start,
                              **{f"val_acc_exit{k}": a for k, a in enumerate(val_acc)}})
            accs = " ".join(f"{a:.4f}" for a in val_acc)
            print(f"{spec.method}/{spec.dataset}/s{spec.seed} epoch {epoch + 1}/{epochs} ({phase.name}): "
                  f"val acc per exit {accs} ({epoch_log[-1]['seconds']:.1f}s)", flush=True)
            epoch += 1
            elapsed = time.perf_counter() - started
            save_torch(out_dir / "checkpoint.pt", {
                "identity": digest, "epoch": epoch, "phase_index": phase_index, "step": step,
                "model": model.state_dict(), "extra": extra.state_dict() if extra is not None else None,
                "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "step_log": step_log, "grad_log": grad_log, "epoch_log": epoch_log,
                "train_seconds": elapsed})
    train_seconds = elapsed  # epochs only: resuming a finished run reproduces its record exactly

    logits = {s: predict(method, model, extra, data.splits[s], device, memory_format, common["eval_batch_size"])
              for s in ("val", "test")}
    with torch.no_grad():
        extras = {s: {k: v.float().cpu() for k, v in method.eval_outputs(extra, logits[s].to(device)).items()}
                  for s in logits}
    save_torch(out_dir / "logits.pt", {s: {"logits": logits[s], "labels": data.splits[s].labels, "extras": extras[s]}
                                       for s in logits})
    save_torch(out_dir / "model.pt", {"model": model.state_dict(),
                                      "extra": extra.state_dict() if extra is not None else None})
    import pandas as pd

    write_csv(out_dir / "steps.csv", pd.DataFrame(step_log))
    write_csv(out_dir / "grad_stats.csv", pd.DataFrame(grad_log))
    write_csv(out_dir / "epochs.csv", pd.DataFrame(epoch_log))
    metrics = {
        "status": "ok",
        "run": {"dataset": spec.dataset, "method": spec.method, "seed": spec.seed},
        "method": method.metadata(),
        "settings": {"common": common, "dataset": settings},
        "num_exits": model.num_exits,
        "exit_costs": costs,
        "per_exit": {s: {"accuracy": exit_accuracy(logits[s], data.splits[s].labels)} for s in logits},
        "time": {"train_seconds": train_seconds, "seconds_per_epoch": train_seconds / max(epochs, 1),
                 "epochs": epochs, "steps": step},
        "data": {"manifest_sha256": data.manifest["data_sha256"], "sizes": data.manifest["sizes"]},
        "environment": environment(device, "channels_last" if common["channels_last"] else "contiguous"),
        "identity": identity,
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics
