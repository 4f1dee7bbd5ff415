"""Training throughput of `resnet18_scan` on CIFAR-100-shaped random data (3×32×32 images, 100 classes), side by
side in one process, interleaved:

A. a hand-written PyTorch loop: the same model, data (held on the device), batches, AdamW + cosine, joint loss;
B. eebench's engine parts (`build` → `start_phase` → `train_epoch`: the loop `train_run` runs, with its logging,
   divergence checks and per-step `.item()` calls), gradient statistics off.

Both are seeded alike, so they do the same work: the script checks that their final weights are identical.
Samples per second are over the training steps only (no validation, no checkpoint). On CUDA when available
(`--device auto`), else on the CPU, which the output says.

    python benchmarks/gpu_train.py [--images 4096] [--batch 256] [--epochs 2] [--width 64] [--repeats 3]
                                   [--device auto] [--precision fp32|bf16] [--determinism strict|warn|off]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import PreparedDataset
from bench.data.base import Split
from bench.models import build_model
from bench.train import engine

MODEL, CLASSES, SHAPE = "resnet18_scan", 100, (3, 32, 32)


def random_cifar(n: int, seed: int = 0) -> PreparedDataset:
    """CIFAR-100-shaped data held as prepared splits (uint8 pixels, per-channel mean/std), nothing on disk."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, size in (("train", n), ("val", 64), ("test", 64)):
        pixels = torch.from_numpy(rng.integers(0, 256, (size, *SHAPE), dtype=np.uint8))
        labels = torch.from_numpy(rng.integers(0, CLASSES, size).astype(np.int64))
        splits[name] = Split("images", pixels, labels, {"mean": [125.0] * 3, "std": [64.0] * 3}, {})
    manifest = {"num_classes": CLASSES, "data_sha256": "random", "sizes": {k: len(v) for k, v in splits.items()}}
    return PreparedDataset("cifar100", manifest, splits)


def spec(args, seed: int) -> engine.RunSpec:
    common = {"threads": torch.get_num_threads(), "device": args.device, "channels_last": True,
              "grad_stats_every": 10**9, "eval_batch_size": 1024, "max_grad_norm": 1.0e4,
              "determinism": args.determinism, "precision": args.precision}
    settings = {"model": {"name": MODEL, "width": args.width}, "epochs": args.epochs, "batch_size": args.batch,
                "lr": 0.003, "weight_decay": 5e-4, "augment": False}
    return engine.RunSpec("cifar100", "joint", seed, {"label_smoothing": 0.0}, common, settings)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(data: PreparedDataset, args, seed: int) -> tuple[float, dict]:
    """The loop a researcher would write: seeded as the engine seeds, no logging, no checks."""
    run_spec = spec(args, seed)
    gen = engine.seed_everything(seed, run_spec.common["threads"], args.determinism)
    device = engine.resolve_device(args.device)
    model = build_model(MODEL, SHAPE[0], CLASSES, {"width": args.width}).to(device, memory_format=torch.channels_last)
    train = data.splits["train"].to(device)
    labels = train.labels.to(device)
    steps = -(-len(train) // args.batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for b in range(steps):
            idx = order[b * args.batch:(b + 1) * args.batch]
            x = train.batch(idx).to(memory_format=torch.channels_last)
            with engine.autocast(device, args.precision):
                outs = model(x)
                loss = (torch.stack([F.cross_entropy(z, labels[idx]) for z in outs]) / len(outs)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    synchronize(device)
    return time.perf_counter() - started, model.state_dict()


def engine_loop(data: PreparedDataset, args, seed: int) -> tuple[float, dict]:
    """The engine's own parts, as train_run composes them (without validation and checkpoints)."""
    run = engine.build(spec(args, seed), data)
    # Gradient statistics off: the engine measures them at every step divisible by grad_stats_every, step 0
    # included, and one measurement (a backward pass per exit) would cost more than the whole loop of a few steps
    # here. Counting steps from 1 changes nothing else (run.step only numbers the logs and that cadence).
    run.step = 1
    (phase,) = run.method.phases(run.epochs)
    params, optimizer, scheduler = engine.start_phase(run, phase)
    synchronize(run.device)
    started = time.perf_counter()
    for epoch in range(run.epochs):
        engine.train_epoch(run, phase, epoch, epoch, params, optimizer, scheduler)
    synchronize(run.device)
    return time.perf_counter() - started, run.model.state_dict()


def side_by_side(args) -> dict:
    """Interleaved repeats of both loops: {name: [seconds]}, and whether each repeat's weights agreed."""
    times: dict[str, list[float]] = {"hand loop": [], "engine": []}
    same = []
    for repeat in range(args.repeats):
        hand_seconds, hand_weights = hand_loop(random_cifar(args.images), args, repeat)
        engine_seconds, engine_weights = engine_loop(random_cifar(args.images), args, repeat)
        times["hand loop"].append(hand_seconds)
        times["engine"].append(engine_seconds)
        same.append(all(torch.equal(hand_weights[k], engine_weights[k]) for k in hand_weights))
    return {"times": times, "same_weights": same}


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return (f"CPU ({platform.machine()}, {torch.get_num_threads()} threads) — no CUDA device here"
            if not torch.cuda.is_available() else "CPU (asked for)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=64, help="resnet18_scan's base width (64 = the authors')")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--determinism", default="strict", choices=["strict", "warn", "off"])
    args = parser.parse_args()
    device = engine.resolve_device(args.device)
    result = side_by_side(args)
    samples = args.epochs * args.images
    print(f"device: {describe(device)}; torch {torch.__version__}; {MODEL} width {args.width}, {args.images} random "
          f"3×32×32 images, 100 classes, batch {args.batch}, {args.epochs} epochs, {args.precision}, determinism "
          f"{args.determinism}, {args.repeats} interleaved repeats")
    median = {name: statistics.median(values) for name, values in result["times"].items()}
    for name, values in result["times"].items():
        print(f"{name:10s} median {samples / median[name]:9.1f} samples/s   runs (s): " + ", ".join(f"{v:.2f}" for v in values))
    print(f"engine / hand loop throughput: {median['hand loop'] / median['engine']:.3f} "
          f"(overhead {100 * (median['engine'] / median['hand loop'] - 1):+.1f} %); identical final weights in "
          f"{sum(result['same_weights'])}/{len(result['same_weights'])} repeats")


if __name__ == "__main__":
    main()
