"""ClassyNet's class-aware exit policy: an exit takes a sample only when its prediction is one of the exit's
priority classes and its max softmax reaches the threshold. A hand-built case with known exits, the exact
sweep against a slow loop that tests class membership directly, a clear error where a run lacks the mask,
and a tiny trained ClassyNet run where no sample leaves early with a prediction outside its exit's classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.base import load_prepared, prepare_dataset
from bench.errors import BenchError
from bench.evaluate.policies import POLICIES, exit_indices
from bench.train.engine import RunSpec, train_run
from bench.train.method import get_method
from bench.tune.cached import CachedSplit
from bench.tune.exact import single_threshold_curve
from bench.tune.run import load_splits, tune_run

FLOPS = [100, 260, 500]


def confident(prediction: int, confidence: float, classes: int = 3) -> list[float]:
    """Logits whose softmax gives `confidence` to `prediction` and splits the rest evenly."""
    p = [(1 - confidence) / (classes - 1)] * classes
    p[prediction] = confidence
    return np.log(p).tolist()


def priority_extra(classes: list[list[int]], num_classes: int = 3):
    method = get_method("classynet")(None, len(classes), num_classes)
    extra = method.extra_modules()
    for k, row in enumerate(classes):
        extra.classes[k] = torch.tensor([c in row for c in range(num_classes)])
    return method, extra


def slow_exits(predictions, confidence, classes, thresholds):
    """The rule written out: leave at the first exit whose prediction is one of its classes and whose max
    softmax reaches its threshold; the deepest exit takes the rest."""
    k, n = predictions.shape
    exits = []
    for i in range(n):
        for e in range(k):
            if e == k - 1 or (int(predictions[e, i]) in classes[e] and float(confidence[e, i]) >= thresholds[e]):
                break
        exits.append(e)
    return exits


def test_constructed_case_every_exit_known():
    classes = [[0], [1, 2], [0, 1, 2]]
    # (prediction, confidence) at exits 0, 1, 2 for six samples
    samples = [[(0, 0.9), (1, 0.7), (0, 0.6)],   # exit 0: class 0 is exit 0's, 0.9 ≥ 0.8
               [(1, 0.9), (1, 0.7), (1, 0.6)],   # exit 0 confident but class 1 is not exit 0's → exit 1
               [(2, 0.9), (0, 0.7), (0, 0.6)],   # neither shallow exit owns its prediction → exit 2
               [(0, 0.5), (2, 0.7), (2, 0.6)],   # exit 0 owns class 0 but 0.5 < 0.8 → exit 1
               [(0, 0.5), (1, 0.5), (1, 0.6)],   # below both thresholds → exit 2
               [(0, 0.95), (0, 0.9), (0, 0.9)]]  # exit 0
    logits = torch.tensor([[confident(*samples[i][e]) for i in range(6)] for e in range(3)], dtype=torch.float32)
    method, extra = priority_extra(classes)
    extras = method.eval_outputs(extra, logits)
    assert extras["priority_mask"].tolist() == [[True, False, False, True, True, True],
                                                [True, True, False, True, True, False],
                                                [True] * 6]
    scores = POLICIES.get("class_aware").scores(logits, {k: v.float() for k, v in extras.items()})
    assert exit_indices(scores, [0.8, 0.6]).tolist() == [0, 1, 2, 1, 2, 0]
    plain = POLICIES.get("max_softmax").scores(logits)
    assert exit_indices(plain, [0.8, 0.6]).tolist() == [0, 0, 0, 1, 2, 0]  # what plain max softmax did
    assert exit_indices(scores, 0.0).tolist() == [0, 1, 2, 0, 0, 0]  # threshold 0: class membership alone


def test_exact_sweep_and_random_thresholds_match_the_slow_rule():
    gen = torch.Generator().manual_seed(0)
    k, n, c = 3, 300, 5
    logits = torch.randn(k, n, c, generator=gen) * 2
    labels = torch.randint(0, c, (n,), generator=gen)
    classes = [[0, 3], [1, 2, 3], list(range(c))]
    method, extra = priority_extra(classes, c)
    extras = {key: v.float() for key, v in method.eval_outputs(extra, logits).items()}
    split = CachedSplit.from_logits(POLICIES.get("class_aware"), logits, labels, extras, FLOPS)
    predictions, confidence = logits.argmax(-1), logits.softmax(-1).amax(-1).double()
    curve = single_threshold_curve(split)
    rng = np.random.default_rng(1)
    candidates = [[t, t] for t in curve["threshold"][1:]] + rng.uniform(0, 1, (100, 2)).tolist()
    for thresholds in candidates:
        assert split.exits(thresholds).tolist() == slow_exits(predictions, confidence, classes, thresholds)
    for t, correct in zip(curve["threshold"][1:], curve["correct"][1:]):
        exits = torch.tensor(slow_exits(predictions, confidence, classes, [t, t]))
        assert int((predictions.gather(0, exits.view(1, -1))[0] == labels).sum()) == correct


def test_class_aware_without_priority_mask_is_a_clear_error(tmp_path):
    from bench.io import save_torch, write_json

    folder = tmp_path / "run"
    folder.mkdir()
    logits = torch.randn(3, 10, 4)
    save_torch(folder / "logits.pt", {s: {"logits": logits, "labels": torch.zeros(10, dtype=torch.long), "extras": {}}
                                      for s in ("val", "test")})
    write_json(folder / "metrics.json", {"run": {"dataset": "d", "method": "joint", "seed": 0},
                                         "method": {"exit_policy": "max_softmax"}, "exit_costs": {"flops": FLOPS}})
    with pytest.raises(BenchError, match="'class_aware' needs priority_mask.*tune.policy: method"):
        load_splits(folder, "class_aware")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_params):
    root = tmp_path_factory.mktemp("classynet")
    prepare_dataset("tiny", {"n_train": 256, "n_val": 128, "n_test": 128, "noise": 1.0, "split_seed": 0,
                             "subset": None}, root / "data")
    settings = {"model": {"name": "tiny_cnn", "widths": [4, 8, 8], "head_width": 4}, "epochs": 3, "batch_size": 32,
                "lr": 0.01, "weight_decay": 0.0, "augment": False}
    common = {**real_params["train"]["common"], "threads": 2, "device": "cpu"}
    spec = RunSpec("tiny", "classynet", 0, {"class_acc_threshold": 0.6}, common, settings)
    train_run(spec, load_prepared("tiny", root / "data"), root / "run", {"digest": "classynet-policy"}, progress=False)
    return root


def test_trained_classynet_never_answers_outside_an_exits_classes(trained, real_params):
    from bench.config import TUNE_DEFAULTS

    folder = trained / "run"
    classes = torch.load(folder / "model.pt", weights_only=True)["extra"]["classes"]  # [K, C] bool
    assert not classes[:-1].all(), "the tiny run should restrict some exit (else the test shows nothing)"
    params = {**TUNE_DEFAULTS, "budgets": [0.3, 0.5, 0.7, 1.0], "trials": 20, "storage": "journal",
              "pareto_budgets": 10, "risk_grid": 21}
    result = tune_run(folder, trained / "tune", params, seed=0)
    assert result["policy"] == "class_aware"
    logits = torch.load(folder / "logits.pt", weights_only=True)
    chosen = [r["thresholds"] for r in result["budgets"] if r["feasible"]] + \
             [r["thresholds"] for r in result["risk_control"]]
    early_somewhere = False
    for thresholds in chosen:
        for split in ("val", "test"):
            z = logits[split]["logits"]
            scores = POLICIES.get("class_aware").scores(z, logits[split]["extras"])
            exits = exit_indices(scores, thresholds)
            predictions = z.argmax(-1).gather(0, exits.view(1, -1))[0]
            early = exits < z.shape[0] - 1
            assert classes[exits[early], predictions[early]].all()  # every early answer is one of its exit's classes
            early_somewhere |= bool(early.any())
    assert early_somewhere


def test_evaluate_runs_class_aware_where_the_mask_exists(trained):
    from bench.evaluate.thresholds import evaluate_run

    result = evaluate_run(trained / "run", ["max_softmax", "class_aware"], [0.0, 0.9])
    assert result["skipped_policies"] == []
    own = [r for r in result["rows"] if r["own_policy"]]
    assert {r["policy"] for r in own} == {"class_aware"} and len(own) == 4  # 2 thresholds × val, test
    logits = torch.load(trained / "run" / "logits.pt", weights_only=True)["test"]
    allowed = logits["extras"]["priority_mask"][0].bool()
    at_zero = next(r for r in own if r["split"] == "test" and r["threshold"] == 0.0)
    assert at_zero["exit_fractions"][0] == pytest.approx(allowed.double().mean().item())  # threshold 0: the mask alone
