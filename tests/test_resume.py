"""Kill and resume, for every registered method: a run stopped right after a checkpoint (at a phase boundary,
and after the first epoch of a phase of ≥ 2 epochs) and started again ends bit-identical to an uninterrupted
run, and really resumes (it trains only the epochs after the checkpoint). The kill is simulated in-process
(the checkpoint save raises after writing); tests/test_reliability.py has the real `kill -9` of a subprocess."""

from __future__ import annotations

import copy
import itertools
import json

import pandas as pd
import pytest
import torch

import bench.train.engine as engine
from bench.data.base import load_prepared, prepare_dataset
from bench.train.engine import RunSpec, train_run
from bench.train.method import METHODS, get_method

EPOCHS = 4
SETTINGS = {"model": {"name": "tiny_cnn", "widths": [4, 8, 8], "head_width": 4}, "epochs": EPOCHS,
            "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "augment": False}
DATA = {"n_train": 64, "n_val": 32, "n_test": 32, "noise": 1.0, "split_seed": 0, "subset": None}
# method params that make the method's state change within this short run (defaults elsewhere): a meta step and
# a gate/classifier alternation every step instead of every 10 / 50 steps
# (and BranchyNet's optional pre-training phase, so its phase boundary is resumed too)
OVERRIDES = {"l2w_den": {"meta_interval": 1}, "jei_dnn": {"bilevel_batch_count": 1},
             "branchynet": {"pretrain_fraction": 0.5}}
IDENTITY = {"digest": "test-resume"}


class Killed(Exception):
    pass


def stop_points(name: str) -> dict[str, int]:
    """Epochs after which to kill: every phase boundary, and one epoch into the first phase of ≥ 2 epochs."""
    phases = get_method(name)(OVERRIDES.get(name), 3, 4).phases(EPOCHS)
    ends = list(itertools.accumulate(p.epochs for p in phases))
    stops = {f"boundary{i}": end for i, end in enumerate(ends[:-1])}
    starts = [0] + ends[:-1]
    long = [(p, start) for p, start in zip(phases, starts) if p.epochs >= 2]
    if long:
        stops["mid_" + long[0][0].name] = long[0][1] + 1
    return stops


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    prepare_dataset("tiny", DATA, root)
    return load_prepared("tiny", root)


@pytest.fixture(scope="module")
def common(real_params):
    return {**real_params["train"]["common"], "grad_stats_every": 3, "threads": 1, "device": "cpu"}


def outputs(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    for volatile in ("time", "environment"):
        metrics.pop(volatile)
    return {"metrics": metrics, "logits": torch.load(folder / "logits.pt", weights_only=True),
            "model": torch.load(folder / "model.pt", weights_only=True),
            "steps": pd.read_csv(folder / "steps.csv"), "grad_stats": pd.read_csv(folder / "grad_stats.csv"),
            "epochs": pd.read_csv(folder / "epochs.csv").drop(columns="seconds")}


def identical(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    return a == b


def run(spec, data, folder, monkeypatch, kill_after: int | None = None) -> int:
    """Train; with `kill_after`, raise right after the kill_after-th checkpoint is written. Returns the number
    of checkpoints this call wrote (= epochs it trained)."""
    saved = []
    real_save = engine.save_torch

    def save(path, obj):
        real_save(path, obj)
        if path.name == "checkpoint.pt":
            saved.append(obj["epoch"])
            if len(saved) == kill_after:
                raise Killed

    monkeypatch.setattr(engine, "save_torch", save)
    try:
        train_run(spec, data, folder, IDENTITY, progress=False)
    except Killed:
        pass
    return len(saved)


@pytest.mark.parametrize("name", METHODS.names())
def test_resume_is_bit_identical_for_every_method(name, data, common, tmp_path, monkeypatch, capsys):
    spec = RunSpec("tiny", name, 0, copy.deepcopy(OVERRIDES.get(name, {})), common, SETTINGS)
    stops = stop_points(name)
    assert stops and any(key.startswith("mid_") for key in stops), f"{name}: no phase of ≥ 2 epochs in {EPOCHS}"
    assert run(spec, data, tmp_path / "straight", monkeypatch) == EPOCHS
    reference = outputs(tmp_path / "straight")
    for where, stop in stops.items():
        folder = tmp_path / where
        assert run(spec, data, folder, monkeypatch, kill_after=stop) == stop
        assert not (folder / "metrics.json").exists()
        assert torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"] == stop
        capsys.readouterr()
        assert run(spec, data, folder, monkeypatch) == EPOCHS - stop, f"{where}: the run did not resume"
        assert f"after epoch {stop}/{EPOCHS}" in capsys.readouterr().out
        resumed = outputs(folder)
        different = [key for key in reference if not identical(reference[key], resumed[key])]
        assert not different, f"{name} killed at {where} (epoch {stop}): {different} differ from the straight run"


def test_state_a_checkpoint_cannot_hold_is_an_error():
    """An attribute that is neither a plain value nor saved by the method's own state_dict fails loudly."""
    method = get_method("joint")(None, 3, 4)
    method.helper_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="helper_optimizer \\(SGD\\)"):
        method.state_dict()


def test_l2w_den_checkpoints_its_meta_optimiser():
    """The weight net's Adam moments survive state_dict → load_state_dict into a fresh method."""
    cls = get_method("l2w_den")
    method = cls(None, 3, 4)
    net = method.extra_modules()
    optimizer = method.optimizer_for(net)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = copy.deepcopy(method.state_dict())
    fresh = cls(None, 3, 4)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["meta_optimizer_state"] is not None  # kept until the optimiser is rebuilt
    restored = fresh.optimizer_for(net).state_dict()
    expected = optimizer.state_dict()
    assert restored["state"].keys() == expected["state"].keys()
    for k in expected["state"]:
        assert all(torch.equal(restored["state"][k][f], expected["state"][k][f]) for f in ("exp_avg", "exp_avg_sq", "step"))
