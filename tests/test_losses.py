"""Hand-computed checks of common.losses (focal loss, focal matching cost, GIoU loss)."""
import math

import pytest
import torch

from common.losses import focal_classification_cost, giou_loss, sigmoid_focal_loss

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def _fl(p_t: float, alpha_t: float, gamma: float = 2.0) -> float:
    return alpha_t * (1 - p_t) ** gamma * -math.log(p_t)


def test_sigmoid_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, LN3, LN3])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = torch.tensor([
        0.25 * 0.25 * math.log(2),  # p=0.5 positive: 0.043322
        0.75 * 0.25 * math.log(2),  # p=0.5 negative: 0.129965
        _fl(0.75, 0.25),  # p=0.75 positive: 0.004495
        _fl(0.25, 0.75),  # p=0.75 negative (p_t = 0.25): 0.584843
    ])
    out = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)
    assert out[3].item() == pytest.approx(0.584843, abs=1e-6)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, reduction="sum"), expected.sum())
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, reduction="mean"), expected.mean())


def test_sigmoid_focal_loss_gamma0_is_weighted_bce():
    logits = torch.tensor([[0.3, -1.2]])
    targets = torch.tensor([[1.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    out = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=0.0)
    torch.testing.assert_close(out, bce * torch.tensor([[0.25, 0.75]]))


def test_sigmoid_focal_loss_bad_input():
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), reduction="avg")


def test_focal_classification_cost_table():
    logits = torch.tensor([[0.0, LN3], [LN3, 0.0]])  # 2 predictions, K = 2
    gt = torch.tensor([1, 0, 1])
    # cost(p) = 0.25 (1-p)^2 (-log p) - 0.75 p^2 (-log(1-p))
    c_half = 0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2)  # -0.086643
    c_075 = _fl(0.75, 0.25) - _fl(0.25, 0.75)  # -0.580348
    expected = torch.tensor([[c_075, c_half, c_075], [c_half, c_075, c_half]])
    out = focal_classification_cost(logits, gt, alpha=0.25, gamma=2.0)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out[0, 0].item() == pytest.approx(-0.580348, abs=1e-5)


def test_focal_classification_cost_empty_and_errors():
    assert focal_classification_cost(torch.zeros(5, 3), torch.zeros(0, dtype=torch.long)).shape == (5, 0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        focal_classification_cost(torch.zeros(5, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match="expected logits"):
        focal_classification_cost(torch.zeros(5), torch.tensor([0]))


def test_giou_loss_hand_values():
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 4.0, 5.0]])
    b2 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 4.0, 5.0]])
    # overlap: IoU 1/7, hull 9, union 7 -> GIoU = 1/7 - 2/9; disjoint: IoU 0, hull 3, union 2 -> -1/3
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 0.0])
    torch.testing.assert_close(giou_loss(b1, b2), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(giou_loss(b1, b2, reduction="sum"), expected.sum(), rtol=1e-5, atol=1e-6)
    # scale invariance: normalised and absolute coordinates give the same loss
    torch.testing.assert_close(giou_loss(b1 / 7.0, b2 / 7.0), expected, rtol=1e-4, atol=1e-6)
    assert giou_loss(torch.zeros(0, 4), torch.zeros(0, 4), reduction="mean").item() == 0.0
    with pytest.raises(ValueError, match="XYXY"):
        giou_loss(b1, b2[:2])


def test_set_box_losses_hand_values():
    from common.losses import set_box_losses

    # One image 10x20 (w x h); prediction 1 matched to GT 0.
    pred = torch.tensor([[[0.0, 0, 1, 1], [0.0, 0, 4, 4]]], requires_grad=True)
    targets = [{"labels": torch.tensor([0]), "boxes_xyxy": torch.tensor([[0.0, 0, 2, 4]]),
                "image_size_xyxy": torch.tensor([10.0, 20, 10, 20])}]
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    out = set_box_losses(pred, targets, indices, num_boxes=2.0)
    # L1: |4-2|/10 + |4-4|/20 = 0.2, / 2 boxes
    assert out["loss_bbox"].item() == pytest.approx(0.1)
    # IoU = 8/16, enclosing box = union -> GIoU 0.5, loss (1 - 0.5) / 2
    assert out["loss_giou"].item() == pytest.approx(0.25)
    out["loss_giou"].backward()
    assert pred.grad[0, 0].abs().sum() == 0 and pred.grad[0, 1].abs().sum() > 0


def test_set_focal_loss_one_hot_and_no_gt():
    from common.losses import set_focal_loss, sigmoid_focal_loss

    logits = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]])
    targets = [{"labels": torch.tensor([1]), "boxes_xyxy": torch.zeros(1, 4),
                "image_size_xyxy": torch.ones(4)}]
    got = set_focal_loss(logits, targets, [(torch.tensor([0]), torch.tensor([0]))], num_boxes=1.0)
    onehot = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    assert got.item() == pytest.approx(sigmoid_focal_loss(logits, onehot, 0.25, 2.0, reduction="sum").item())
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes_xyxy": torch.zeros(0, 4),
              "image_size_xyxy": torch.ones(4)}]
    none = set_focal_loss(logits, empty, [(torch.zeros(0, dtype=torch.int64),) * 2], num_boxes=1.0)
    assert none.item() == pytest.approx(
        sigmoid_focal_loss(logits, torch.zeros_like(logits), 0.25, 2.0, reduction="sum").item()
    )


def test_set_targets_from_instances_and_bad_class_names_key():
    from common.losses import set_targets_from_instances
    from common.structures import Boxes, Instances

    inst = Instances((20, 10))  # (h, w)
    inst.gt_boxes = Boxes(torch.tensor([[1.0, 2, 3, 4]]))
    inst.gt_classes = torch.tensor([2])
    (t,) = set_targets_from_instances([inst], 3, torch.device("cpu"), "MODEL.X.NUM_CLASSES")
    assert t["labels"].tolist() == [2]
    assert t["image_size_xyxy"].tolist() == [10.0, 20.0, 10.0, 20.0]
    assert t["boxes_xyxy"].tolist() == [[1.0, 2.0, 3.0, 4.0]]
    with pytest.raises(ValueError, match="MODEL.X.NUM_CLASSES"):
        set_targets_from_instances([inst], 2, torch.device("cpu"), "MODEL.X.NUM_CLASSES")
