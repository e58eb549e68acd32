"""common.ops.soft_nms against hand-computed decays (the Cython ``external/nms.pyx`` rules)."""
import math

import pytest
import torch

from common.ops import soft_nms, soft_nms_merge

# A, B: IoU 0.5; A, C: IoU 1/3; B, C: IoU 0.2; D overlaps nothing.
BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])


def test_gaussian_decays_by_hand():
    keep, scores = soft_nms(BOXES, SCORES, method="gaussian", sigma=0.5)
    # A kept: B *= exp(-0.5^2/0.5), C *= exp(-(1/3)^2/0.5); D (0.6) is next; then C decays B by exp(-0.2^2/0.5).
    assert keep.tolist() == [0, 3, 2, 1]
    expected = [0.9, 0.6, 0.7 * math.exp(-2 / 9), 0.8 * math.exp(-0.5) * math.exp(-0.08)]
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_linear_decays_threshold_and_classes_by_hand():
    keep, scores = soft_nms(BOXES, SCORES, method="linear", iou_threshold=0.3)
    # A: B *= 1 - 0.5, C *= 1 - 1/3; C leaves B (IoU 0.2 <= Nt) unchanged.
    assert keep.tolist() == [0, 3, 2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6, 0.7 * 2 / 3, 0.4]))
    # Score threshold: B (0.4 after A) is discarded; a low box that overlaps nothing stays.
    boxes = torch.cat([BOXES, torch.tensor([[40.0, 40.0, 50.0, 50.0]])])
    scores_in = torch.cat([SCORES, torch.tensor([1e-4])])
    keep, scores = soft_nms(boxes, scores_in, method="linear", iou_threshold=0.3, score_threshold=0.45)
    assert keep.tolist() == [0, 3, 2, 4]
    # Per class: B in another class than A and C is untouched.
    keep, scores = soft_nms(BOXES, SCORES, torch.tensor([0, 1, 0, 0]), method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 1, 3, 2]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.6, 0.7 * 2 / 3]))


def test_plus_one_iou_convention():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0], [9.5, 5.0, 19.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, legacy = soft_nms(boxes, scores, method="gaussian", plus_one=True)
    _, plain = soft_nms(boxes, scores, method="gaussian", plus_one=False)
    # +1: areas 100 and 50, intersection 10 x 5 -> IoU 0.5; continuous: 36 / 81.
    # Box 2 touches box 0 only with +1 widths: intersection (9 - 9.5 + 1) x 5, union 100 + 52.5 - 2.5.
    iou2 = 2.5 / 150.0
    torch.testing.assert_close(legacy, torch.tensor([0.9, 0.7 * math.exp(-iou2 ** 2 / 0.5), 0.8 * math.exp(-0.5)]))
    torch.testing.assert_close(plain, torch.tensor([0.9, 0.7, 0.8 * math.exp(-(36 / 81) ** 2 / 0.5)]))


@pytest.mark.parametrize("weight_exp", [2.0, 10.0])
def test_merge_gives_the_hand_computed_weighted_box(weight_exp):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]])
    scores = torch.tensor([0.9, 0.6])
    corner = torch.tensor([[0.9, 0.8], [0.5, 0.3]])  # (top-left, bottom-right) weights
    keep, new_scores, merged = soft_nms_merge(boxes, scores, coord_weights=corner, weight_exp=weight_exp)
    iou = 80.0 / 120.0
    w = math.exp(-iou ** 2 / 0.5)
    mw = (1 - w) ** weight_exp
    x1 = (0.0 * 0.9 + 2.0 * 0.5 * mw) / (0.9 + 0.5 * mw)
    x2 = (10.0 * 0.8 + 12.0 * 0.3 * mw) / (0.8 + 0.3 * mw)
    assert keep.tolist() == [0, 1]
    torch.testing.assert_close(merged[0], torch.tensor([x1, 0.0, x2, 10.0]))
    torch.testing.assert_close(merged[1], boxes[1])  # nothing left to merge into the last box
    torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.6 * w]))


def test_empty_input_and_bad_method():
    keep, scores = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and scores.shape == (0,)
    with pytest.raises(ValueError, match="method"):
        soft_nms(BOXES, SCORES, method="exp")
