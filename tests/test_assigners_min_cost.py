"""MinCostMatcher (OneNet Minimum Cost Assignment, paper Sec. 3.2 / Eq. 3 / Algorithm 1)."""
from __future__ import annotations

import math

import pytest
import torch

from common.assigners import MinCostMatcher


def _target(labels, boxes, w=100.0, h=80.0):
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes_xyxy": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "image_size_xyxy": torch.tensor([w, h, w, h]),
    }


def test_cost_matrix_matches_hand_computation():
    # Logit 0 -> p = 0.5: focal cost = 0.25*0.25*log2 - 0.75*0.25*log2 = -0.125*log 2 (eps negligible).
    m = MinCostMatcher()
    logits = torch.zeros(2, 3)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 40.0, 70.0, 80.0]])
    t = _target([1], [[0.0, 0.0, 10.0, 20.0]])
    cost = m.cost_matrix(logits, boxes, t["labels"], t["boxes_xyxy"], t["image_size_xyxy"])
    c_cls = -0.125 * math.log(2.0)
    # Location 0: L1 = |10-20|/80 = 0.125; IoU = 100/200, enclosing = union -> GIoU = 0.5.
    expect0 = 2 * c_cls + 5 * 0.125 + 2 * (-0.5)
    # Location 1: L1 = 50/100 + 40/80 + 60/100 + 60/80 = 2.35; IoU 0; enclosing 70*80 = 5600,
    # union 800 + 200 = 1000 -> GIoU = -(5600 - 1000)/5600.
    expect1 = 2 * c_cls + 5 * 2.35 + 2 * (4600 / 5600)
    torch.testing.assert_close(cost[:, 0], torch.tensor([expect0, expect1]), atol=1e-5, rtol=0)


def test_weights_are_separable_and_zero_terms_are_skipped():
    logits = torch.randn(5, 2)
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 5) + torch.arange(5.0).view(-1, 1) * 3
    t = _target([0, 1], [[1.0, 1, 9, 9], [5.0, 5, 20, 20]])
    args = (logits, boxes, t["labels"], t["boxes_xyxy"], t["image_size_xyxy"])
    full = MinCostMatcher(2.0, 5.0, 2.0).cost_matrix(*args)
    cls_only = MinCostMatcher(2.0, 0.0, 0.0).cost_matrix(*args)
    loc_only = MinCostMatcher(0.0, 5.0, 2.0).cost_matrix(*args)  # paper Table 1: no classification cost
    torch.testing.assert_close(full, cls_only + loc_only)
    with pytest.raises(ValueError, match="all cost weights"):
        MinCostMatcher(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="MATCHER_MODE"):
        MinCostMatcher(mode="greedy")


# Hand-made cost table (3 locations x 2 GTs). Argmin per GT: both GTs pick location 1
# (0.5 and 0.6). One-to-one: {GT0->0, GT1->1} costs 1.6 < {GT0->1, GT1->0} 2.0 < others.
TABLE = torch.tensor([[1.0, 1.5], [0.5, 0.6], [3.0, 4.0]])


@pytest.fixture
def table_matcher(monkeypatch):
    def make(mode):
        m = MinCostMatcher(mode=mode)
        monkeypatch.setattr(m, "cost_matrix", lambda *a: TABLE.clone())
        return m

    return make


def _outputs(b, n=3, k=2):
    return {"pred_logits": torch.zeros(b, n, k), "pred_boxes": torch.tensor([[0.0, 0, 1, 1]]).repeat(b, n, 1)}


def test_hungarian_mode_picks_hand_computed_one_to_one_minimum(table_matcher):
    (loc, gt), = table_matcher("hungarian")(_outputs(1), [_target([0, 1], [[0, 0, 1, 1], [0, 0, 2, 2]])])
    assert loc.tolist() == [0, 1] and gt.tolist() == [0, 1]
    assert len(set(loc.tolist())) == 2  # exactly one distinct positive per GT


def test_argmin_mode_is_algorithm_1(table_matcher):
    (loc, gt), = table_matcher("argmin")(_outputs(1), [_target([0, 1], [[0, 0, 1, 1], [0, 0, 2, 2]])])
    assert loc.tolist() == [1, 1] and gt.tolist() == [0, 1]


@pytest.mark.parametrize("mode", ["hungarian", "argmin"])
def test_one_positive_per_gt_real_costs_and_empty_images(mode):
    torch.manual_seed(0)
    n = 50
    xy = torch.rand(n, 2) * 80
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2) * 30], dim=1)
    gt = boxes[[7, 23, 41]].clone()
    outputs = {"pred_logits": torch.zeros(3, n, 4), "pred_boxes": boxes.unsqueeze(0).repeat(3, 1, 1)}
    targets = [_target([0, 3, 1], gt.tolist()), _target([], []), _target([2], gt[:1].tolist())]
    indices = MinCostMatcher(mode=mode)(outputs, targets)
    (l0, g0), (l1, g1), (l2, g2) = indices
    # Predictions identical to a GT have zero L1 and GIoU 1: they are the unique minima.
    assert dict(zip(g0.tolist(), l0.tolist())) == {0: 7, 1: 23, 2: 41}
    assert l1.numel() == 0 and g1.numel() == 0 and l1.dtype == torch.int64
    assert l2.tolist() == [7] and g2.tolist() == [0]
    assert sorted(g0.tolist()) == [0, 1, 2]


def test_non_finite_cost_names_the_image():
    outputs = {"pred_logits": torch.zeros(2, 4, 1), "pred_boxes": torch.tensor([[0.0, 0, 5, 5]]).repeat(2, 4, 1)}
    outputs["pred_boxes"][1, 2] = float("nan")
    t = _target([0], [[0, 0, 5, 5]])
    with pytest.raises(FloatingPointError, match="image 1"):
        MinCostMatcher()(outputs, [t, t])
