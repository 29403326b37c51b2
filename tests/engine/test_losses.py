"""Soft-target cross-entropy, the pseudo-label confidence mask and soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nightcrawler.engine.losses import (
    confidence_mask,
    masked_mean,
    soft_target_cross_entropy,
    soft_targets_from_probs,
)


def test_soft_cross_entropy_matches_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    targets = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.25, 0.75]])
    per = soft_target_cross_entropy(logits, targets, reduction="none")
    lse0 = math.log(math.exp(2) + 1 + math.exp(-1))
    lse1 = math.log(2 * math.exp(0.5) + math.exp(3))
    expected0 = -(0.7 * (2 - lse0) + 0.2 * (0 - lse0) + 0.1 * (-1 - lse0))
    expected1 = -(0.25 * (0.5 - lse1) + 0.75 * (3 - lse1))
    assert per.tolist() == pytest.approx([expected0, expected1], rel=1e-6)
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(
        (expected0 + expected1) / 2, rel=1e-6
    )
    assert soft_target_cross_entropy(logits, targets, "sum").item() == pytest.approx(
        expected0 + expected1, rel=1e-6
    )


def test_hard_labels_and_one_hot_targets_give_the_ordinary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    ref = F.cross_entropy(logits, labels)
    assert soft_target_cross_entropy(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)
    one_hot = F.one_hot(labels, 5).float()
    assert soft_target_cross_entropy(logits, one_hot).item() == pytest.approx(ref.item(), rel=1e-6)


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.tensor([[20.0, -20.0]]).half()
    loss = soft_target_cross_entropy(logits, torch.tensor([[0.0, 1.0]]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(40.0, rel=1e-4)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_masked_mean():
    per = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert masked_mean(per, None).item() == 4.0
    assert masked_mean(per, torch.tensor([True, False, True, False])).item() == 2.0
    assert masked_mean(per, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_confidence_mask_rule():
    # top-1 softmax probabilities q of these rows: [~1.0, 0.5, ~0.33, ~0.79]
    logits = torch.tensor([[20.0, 0, 0], [1.0, 1.0, -30], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    q = torch.softmax(logits, -1).max(-1).values
    assert confidence_mask(logits, -1).all()
    for k in (0.0, 0.5, 1.0):
        expected = q > q.mean() - k * q.std()
        assert torch.equal(confidence_mask(logits, k), expected)
    assert confidence_mask(logits, 0.0).tolist() == [True, False, False, True]


def test_soft_targets_normalise_and_sharpen():
    p = torch.tensor([[0.6, 0.3, 0.05], [0.0, 0.5, 0.5]])  # rows sum to 0.95 and 1.0, as the shipped CSVs
    t1 = soft_targets_from_probs(p, 1.0)
    assert t1.sum(-1).tolist() == pytest.approx([1.0, 1.0])
    assert t1[0].tolist() == pytest.approx((p[0] / p[0].sum()).tolist(), rel=1e-5)
    t_half = soft_targets_from_probs(p, 0.5)
    sq = p[0] ** 2
    assert t_half[0].tolist() == pytest.approx((sq / sq.sum()).tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="SOFT_T"):
        soft_targets_from_probs(p, 0.0)
    with pytest.raises(ValueError, match="positive sum"):
        soft_targets_from_probs(torch.zeros(1, 3))
