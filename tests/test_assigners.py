"""HungarianMatcher against brute force and hand-made cases."""
import itertools

import pytest
import torch
from torchvision.ops import generalized_box_iou

from common.assigners import HungarianMatcher
from common.losses import focal_classification_cost


def _target(labels, boxes, w, h):
    return {
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "boxes_xyxy": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "image_size_xyxy": torch.tensor([w, h, w, h], dtype=torch.float32),
    }


def _brute_force(cost: torch.Tensor):
    """Min-cost injective map GT -> prediction by enumerating all permutations."""
    n, m = cost.shape
    best, best_pairs = float("inf"), None
    for preds in itertools.permutations(range(n), m):
        total = sum(cost[p, g].item() for g, p in enumerate(preds))
        if total < best:
            best, best_pairs = total, sorted(zip(preds, range(m)))
    return best, best_pairs


def test_hand_made_l1_only():
    # 3 predictions, 2 GTs in a 10x10 image; boxes differ only in x, so C[i, j] = 2|dx| / 10.
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    preds = torch.tensor([[[0.9, 0, 2.9, 2], [0.0, 0, 2.0, 2], [3.0, 0, 5.0, 2]]])
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": preds}
    target = _target([0, 1], [[0, 0, 2, 2], [1, 0, 3, 2]], 10, 10)
    (pi, gi), = matcher(outputs, [target])
    # costs: p0 [0.18, 0.02], p1 [0, 0.2], p2 [0.6, 0.4] -> p0-g1, p1-g0
    assert pi.tolist() == [0, 1] and gi.tolist() == [1, 0]
    assert pi.dtype == gi.dtype == torch.int64


def test_matches_brute_force_full_cost():
    g = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    for _ in range(5):
        logits = torch.randn(1, 3, 4, generator=g)
        xy = torch.rand(1, 3, 2, generator=g) * 20
        preds = torch.cat([xy, xy + 5 + torch.rand(1, 3, 2, generator=g) * 10], dim=-1)
        target = _target([1, 3], [[2, 3, 10, 12], [8, 1, 20, 9]], 32, 24)
        (pi, gi), = matcher({"pred_logits": logits, "pred_boxes": preds}, [target])
        # independent cost computation
        whwh = target["image_size_xyxy"]
        c = (
            5.0 * (preds[0, :, None] / whwh - target["boxes_xyxy"][None] / whwh).abs().sum(-1)
            + 2.0 * focal_classification_cost(logits[0], target["labels"])
            - 2.0 * generalized_box_iou(preds[0], target["boxes_xyxy"])
        )
        best, pairs = _brute_force(c)
        assert sorted(zip(pi.tolist(), gi.tolist())) == pairs
        assert c[pi, gi].sum().item() == pytest.approx(best, abs=1e-5)


def test_batch_with_different_gt_counts_and_zero_gt():
    matcher = HungarianMatcher()
    bs, n = 3, 4
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(bs, n, 2, generator=g) * 10
    outputs = {"pred_logits": torch.randn(bs, n, 3, generator=g), "pred_boxes": torch.cat([xy, xy + 6], -1)}
    targets = [
        _target([0, 2], [[0, 0, 5, 5], [4, 4, 9, 9]], 20, 20),
        _target([], [], 30, 16),
        _target([1], [[1, 1, 8, 8]], 16, 30),
    ]
    out = matcher(outputs, targets)
    assert [len(p) for p, _ in out] == [2, 0, 1]
    assert out[1][0].dtype == torch.int64 and out[1][1].numel() == 0
    for (p, gi), t in zip(out, targets):
        assert sorted(gi.tolist()) == list(range(len(t["labels"])))
        assert len(set(p.tolist())) == len(p)
    # image 2 alone gives the same match as inside the batch (blocks are independent)
    alone = matcher({k: v[2:] for k, v in outputs.items()}, targets[2:])
    assert alone[0][0].tolist() == out[2][0].tolist()


def test_all_images_without_gt():
    matcher = HungarianMatcher()
    outputs = {"pred_logits": torch.zeros(2, 5, 3), "pred_boxes": torch.tensor([0.0, 0, 4, 4]).repeat(2, 5, 1)}
    out = matcher(outputs, [_target([], [], 8, 8), _target([], [], 8, 8)])
    assert all(p.numel() == 0 and g.numel() == 0 for p, g in out)


def test_more_gts_than_predictions():
    matcher = HungarianMatcher()
    outputs = {"pred_logits": torch.zeros(1, 2, 2), "pred_boxes": torch.tensor([[[0.0, 0, 4, 4], [4.0, 4, 8, 8]]])}
    t = _target([0, 1, 1], [[0, 0, 4, 4], [4, 4, 8, 8], [0, 4, 4, 8]], 8, 8)
    (p, gi), = matcher(outputs, [t])
    assert p.tolist() == [0, 1] and gi.tolist() == [0, 1]


def test_non_finite_cost_raises():
    matcher = HungarianMatcher()
    logits = torch.zeros(2, 2, 2)
    logits[1, 0, 0] = float("nan")
    outputs = {"pred_logits": logits, "pred_boxes": torch.tensor([0.0, 0, 4, 4]).repeat(2, 2, 1)}
    targets = [_target([0], [[0, 0, 4, 4]], 8, 8), _target([0], [[0, 0, 4, 4]], 8, 8)]
    with pytest.raises(FloatingPointError, match="image 1"):
        matcher(outputs, targets)
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        matcher(outputs, targets[:1])
