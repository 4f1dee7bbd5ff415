"""Exit policies against a slow, obvious reference."""

import math

import pytest
import torch

from bench.evaluate.policies import POLICIES, evaluate_policy, exit_indices


def reference(logits, labels, score, threshold, flops):
    k, n, _ = logits.shape
    correct, cost, exits = 0, 0.0, []
    for i in range(n):
        for e in range(k):
            if e == k - 1 or score[e, i] >= threshold:
                break
        exits.append(e)
        correct += int(logits[e, i].argmax() == labels[i])
        cost += flops[e]
    return correct / n, cost / n, exits


@pytest.mark.parametrize("policy", POLICIES.names())
@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.8, 1.0])
def test_policy_matches_loop_reference(policy, threshold):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 200, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (200,), generator=gen)
    flops = [10, 25, 70]
    scores = POLICIES.get(policy)(logits)
    exits = exit_indices(scores, threshold)
    result = evaluate_policy(logits, labels, exits, flops)
    acc, cost, ref_exits = reference(logits, labels, scores, threshold, flops)
    assert exits.tolist() == ref_exits
    assert result["accuracy"] == pytest.approx(acc) and result["expected_flops"] == pytest.approx(cost)
    assert sum(result["exit_fractions"]) == pytest.approx(1.0)
    assert result["flops_fraction"] == pytest.approx(cost / 70)


def test_entropy_score_is_one_minus_normalised_entropy():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    score = POLICIES.get("entropy")(logits)
    assert score[0, 0] == pytest.approx(0.0, abs=1e-6) and score[0, 1] == pytest.approx(1.0, abs=1e-6)
    p = torch.tensor([0.7, 0.1, 0.1, 0.1])
    entropy = -(p * p.log()).sum()
    assert POLICIES.get("entropy")(p.log().view(1, 1, 4))[0, 0] == pytest.approx(1 - float(entropy) / math.log(4), abs=1e-6)


def test_per_exit_thresholds():
    scores = torch.tensor([[0.9, 0.5, 0.2], [0.1, 0.7, 0.3], [0.0, 0.0, 0.0]])
    assert exit_indices(scores, torch.tensor([0.8, 0.6])).tolist() == [0, 1, 2]
    assert exit_indices(scores, 1.1).tolist() == [2, 2, 2]
