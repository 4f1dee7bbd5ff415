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
@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.8, 1.0, 2.0])
def test_policy_matches_loop_reference(policy, threshold):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 200, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (200,), generator=gen)
    flops = [10, 25, 70]
    extras = {"gate_exit_prob": torch.rand(3, 200, generator=gen),
              "priority_mask": (torch.rand(3, 200, generator=gen) < 0.6).float()}
    scores = POLICIES.get(policy).scores(logits, extras)
    exits = exit_indices(scores, threshold)
    result = evaluate_policy(logits, labels, exits, flops)
    acc, cost, ref_exits = reference(logits, labels, scores, threshold, flops)
    assert exits.tolist() == ref_exits
    assert result["accuracy"] == pytest.approx(acc) and result["expected_flops"] == pytest.approx(cost)
    assert sum(result["exit_fractions"]) == pytest.approx(1.0)
    assert result["flops_fraction"] == pytest.approx(cost / 70)


def test_entropy_score_is_one_minus_normalised_entropy():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    score = POLICIES.get("entropy").scores(logits)
    assert score[0, 0] == pytest.approx(0.0, abs=1e-6) and score[0, 1] == pytest.approx(1.0, abs=1e-6)
    p = torch.tensor([0.7, 0.1, 0.1, 0.1])
    entropy = -(p * p.log()).sum()
    assert POLICIES.get("entropy").scores(p.log().view(1, 1, 4))[0, 0] == pytest.approx(1 - float(entropy) / math.log(4), abs=1e-6)


def test_per_exit_thresholds():
    scores = torch.tensor([[0.9, 0.5, 0.2], [0.1, 0.7, 0.3], [0.0, 0.0, 0.0]])
    assert exit_indices(scores, torch.tensor([0.8, 0.6])).tolist() == [0, 1, 2]
    assert exit_indices(scores, 1.1).tolist() == [2, 2, 2]


def test_patience_counts_consecutive_agreement():
    # predictions per exit for 3 samples: [0,0,0,0], [1,2,2,2], [3,3,1,1]
    preds = torch.tensor([[0, 1, 3], [0, 2, 3], [0, 2, 1], [0, 2, 1]])
    logits = torch.nn.functional.one_hot(preds, 4).float() * 5
    counter = POLICIES.get("patience").scores(logits)
    assert counter.T.tolist() == [[0, 1, 2, 3], [0, 0, 1, 2], [0, 1, 0, 1]]
    assert exit_indices(counter, 2).tolist() == [2, 3, 3]


def test_beem_accumulates_while_exits_agree():
    logits = torch.tensor([[[2.0, 0.0]], [[3.0, 0.0]], [[0.0, 1.0]]])  # agree, agree, disagree
    conf = logits.softmax(-1).amax(-1)[:, 0]
    score = POLICIES.get("beem").scores(logits)[:, 0]
    expected = [0.1 * conf[0], 0.1 * conf[0] + 0.2 * conf[1], 0.3 * conf[2]]
    assert score.tolist() == pytest.approx([float(e) for e in expected])


def test_learned_gate_needs_gate_outputs():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="needs gate_exit_prob"):
        POLICIES.get("learned_gate").scores(torch.zeros(3, 2, 4), {})
