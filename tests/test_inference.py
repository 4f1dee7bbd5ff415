"""The real early-exit inference path: same decisions as the cached evaluation, and the blocks after a
sample's exit are never run for it."""

import pytest
import torch

from bench.evaluate.inference import early_exit_predict
from bench.evaluate.policies import POLICIES, decision_report, exit_indices
from bench.analyse.stats import calibration_bins
from bench.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny_cnn", 3, 4, {}).eval()


@pytest.mark.parametrize("policy", ["max_softmax", "entropy"])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_same_decisions_as_full_forward_and_skipped_blocks(model, policy, batch):
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        logits = torch.stack(model(x))
    scores = POLICIES.get(policy).scores(logits)
    thresholds = [float(scores[0].median()), float(scores[1].quantile(0.3))]
    expected = exit_indices(scores.double(), torch.tensor(thresholds, dtype=torch.float64))
    seen = [0] * model.num_exits
    hooks = [block.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, seen[k] + o.shape[0]))
             for k, block in enumerate(model.blocks)]
    try:
        results = [early_exit_predict(model, chunk, POLICIES.get(policy), thresholds) for chunk in x.split(batch)]
    finally:
        for hook in hooks:
            hook.remove()
    predictions, exits = (torch.cat(parts) for parts in zip(*results))
    assert torch.equal(exits, expected)
    assert torch.equal(predictions, logits.argmax(-1).gather(0, expected.view(1, -1))[0])
    assert 0 < (expected == 0).sum() < len(x)  # the thresholds make samples leave at different exits
    assert seen == [int((expected >= k).sum()) for k in range(model.num_exits)]  # block k ran for those still inside


def test_policies_that_look_deeper_are_refused(model):
    with pytest.raises(ValueError, match="patience"):
        early_exit_predict(model, torch.randn(2, 3, 8, 8), POLICIES.get("patience"), [1, 1])


def test_decision_ece_is_the_ece_of_the_returned_predictions():
    gen = torch.Generator().manual_seed(0)
    confidence = torch.rand(3, 500, generator=gen)
    correct = torch.rand(3, 500, generator=gen) < confidence
    exits = torch.randint(0, 3, (500,), generator=gen)
    report = decision_report(correct, exits, [1, 2, 3], confidence)
    rows = range(500)
    expected = calibration_bins([confidence[exits[i], i].item() for i in rows], [correct[exits[i], i].item() for i in rows])
    assert report["ece"] == pytest.approx(expected["ece"])
    assert report["early_exit_fraction"] == pytest.approx((exits < 2).double().mean().item())
