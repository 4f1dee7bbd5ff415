"""Training-loop overhead, measured side by side in one process (absolute times drift on shared machines):

A. a minimal hand-written PyTorch loop: same model, data, batch size, optimiser, schedule and steps;
B. the engine (`bench.train.engine.train_run`) with gradient statistics off;
C. the engine with gradient statistics every 50 steps (the default).

Runs are interleaved A/B/C, A/B/C, … and the medians compared. Each engine run also validates once per
epoch on a small validation split and writes its outputs, as it does in the pipeline.

Then the same comparison on `resnet18_scan` at reduced width on a few hundred random 3×32×32 images for a
few steps, on the CPU: a hand-written loop vs the engine's parts (benchmarks/gpu_train.py, training steps
only; both loops are seeded alike and the script checks that they end with identical weights).

    python benchmarks/train_overhead.py [--repeats 5] [--train 27000] [--epochs 2] [--parts fmnist,resnet]
                                        [--resnet-images 256] [--resnet-width 16] [--resnet-batch 64]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from bench.config import validate
from bench.data import load_prepared, prepare_dataset
from bench.models import build_model
from bench.study import merge
from bench.train.engine import RunSpec, seed_everything, train_run

ROOT = Path(__file__).resolve().parents[1]


def hand_loop(data, settings, common, seed) -> float:
    """The loop a researcher would write: no logging, no statistics, no checkpoints."""
    gen = seed_everything(seed, common["threads"])
    train = data.splits["train"]
    model = build_model(settings["model"]["name"], 1, 10, {k: v for k, v in settings["model"].items() if k != "name"})
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps = -(-len(train) // settings["batch_size"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["epochs"] * steps)
    started = time.perf_counter()
    for _ in range(settings["epochs"]):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for b in range(steps):
            idx = order[b * settings["batch_size"]:(b + 1) * settings["batch_size"]]
            x = train.batch(idx).to(memory_format=torch.channels_last)
            loss = sum(F.cross_entropy(z, train.labels[idx]) for z in model(x)) / 3
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - started


def engine(data, settings, common, seed, out: Path) -> float:
    spec = RunSpec("fashion_mnist", "joint", seed, {"label_smoothing": 0.0}, common, settings)
    for stale in out.glob("*"):
        stale.unlink()
    identity = {"digest": f"benchmark-seed{seed}"}  # a fresh folder every time: nothing to resume or reuse
    return train_run(spec, data, out, identity, progress=False)["time"]["train_seconds"]


def resnet(args) -> None:
    """Engine vs hand loop on resnet18_scan (reduced width, CIFAR-shaped random images, CPU), side by side."""
    from gpu_train import MODEL, side_by_side  # benchmarks/gpu_train.py, next to this script

    torch.set_num_threads(2)
    setup = argparse.Namespace(images=args.resnet_images, batch=args.resnet_batch, epochs=args.epochs,
                               width=args.resnet_width, repeats=args.repeats, device="cpu", precision="fp32",
                               determinism="strict")
    result = side_by_side(setup)
    steps = args.epochs * -(-args.resnet_images // args.resnet_batch)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; {MODEL} width "
          f"{args.resnet_width}, {args.resnet_images} random 3×32×32 images, batch {args.resnet_batch}, {steps} steps, "
          f"{args.repeats} interleaved repeats")
    median = {name: statistics.median(values) for name, values in result["times"].items()}
    for name, values in result["times"].items():
        print(f"{name:24s} median {median[name]:7.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in values))
    print(f"engine overhead vs hand loop ({MODEL}): {100 * (median['engine'] / median['hand loop'] - 1):+.1f} % "
          f"(target ≤ 5 %; training steps only); identical final weights in {sum(result['same_weights'])}/"
          f"{len(result['same_weights'])} repeats")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", type=int, default=27000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--parts", default="fmnist,resnet", help="which comparisons: fmnist, resnet or both")
    parser.add_argument("--resnet-images", type=int, default=256)
    parser.add_argument("--resnet-width", type=int, default=16)
    parser.add_argument("--resnet-batch", type=int, default=64)
    args = parser.parse_args()
    if "fmnist" in args.parts.split(","):
        fmnist(args)
    if "resnet" in args.parts.split(","):
        resnet(args)


def fmnist(args) -> None:
    params = validate(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), {
        "grid": {"datasets": ["fashion_mnist"], "methods": ["joint", "branchynet"], "extra_seed_methods": []},
        "prepare": {"fashion_mnist": {"subset": {"train": args.train, "val": 256, "test": 256}}},
        "train": {"fashion_mnist": {"epochs": args.epochs}}}))
    settings, common = params["train"]["fashion_mnist"], params["train"]["common"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_dataset("fashion_mnist", params["prepare"]["fashion_mnist"], tmp)
        data = load_prepared("fashion_mnist", tmp)
        no_stats = {**common, "grad_stats_every": 10**9}
        times: dict[str, list[float]] = {"hand loop": [], "engine, no grad stats": [], "engine, grad stats /50": []}
        for repeat in range(args.repeats):
            times["hand loop"].append(hand_loop(data, settings, common, repeat))
            times["engine, no grad stats"].append(engine(data, settings, no_stats, repeat, tmp / "a"))
            times["engine, grad stats /50"].append(engine(data, settings, common, repeat, tmp / "b"))
    steps = args.epochs * -(-args.train // settings["batch_size"])
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {common['threads']} threads; fmnist_cnn, "
          f"{args.train} training images, batch {settings['batch_size']}, {steps} steps, {args.repeats} interleaved repeats")
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:24s} median {value:7.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in times[name]))
    hand, bare, stats = median["hand loop"], median["engine, no grad stats"], median["engine, grad stats /50"]
    print(f"engine overhead vs hand loop: {100 * (bare / hand - 1):+.1f} % (target ≤ 5 %; the engine time includes "
          f"one validation pass per epoch and the per-epoch checkpoint)")
    print(f"gradient-statistics overhead: {100 * (stats / bare - 1):+.1f} % (target ≤ 15 %)")


if __name__ == "__main__":
    main()
