"""Penalty-reduced focal loss and gathered L1 loss (common.losses.heatmap_focal) by hand."""
import math

import pytest
import torch

from common.losses import clamped_sigmoid, gathered_l1_loss, heatmap_focal_loss


def test_heatmap_focal_loss_hand_example():
    pred = torch.tensor([0.9, 0.2, 0.1, 0.6]).view(1, 1, 2, 2)
    gt = torch.tensor([1.0, 0.5, 0.0, 1.0]).view(1, 1, 2, 2)
    pos = -(0.1 ** 2) * math.log(0.9) - (0.4 ** 2) * math.log(0.6)
    neg = -(0.5 ** 4) * 0.2 ** 2 * math.log(0.8) - 1.0 * 0.1 ** 2 * math.log(0.9)
    assert heatmap_focal_loss(pred, gt).item() == pytest.approx((pos + neg) / 2, rel=1e-5)


def test_heatmap_focal_loss_no_objects_is_finite_negative_sum():
    pred = torch.full((2, 3, 4, 4), 0.3, requires_grad=True)
    gt = torch.zeros(2, 3, 4, 4)
    loss = heatmap_focal_loss(pred, gt)
    expected = -(2 * 3 * 16) * 0.09 * math.log(0.7)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_clamped_sigmoid_keeps_log_finite():
    p = clamped_sigmoid(torch.tensor([-100.0, 100.0]))
    assert p[0].item() == pytest.approx(1e-4) and p[1].item() == pytest.approx(1 - 1e-4)
    assert torch.isfinite(heatmap_focal_loss(p.view(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])))


def test_gathered_l1_loss_hand_example():
    pred = torch.zeros(2, 2, 3, 3)
    pred[0, :, 1, 2] = torch.tensor([4.0, 5.0])
    pred[1, :, 0, 0] = torch.tensor([1.0, 1.0])
    loss = gathered_l1_loss(pred, torch.tensor([0, 1]), torch.tensor([1 * 3 + 2, 0]),
                            torch.tensor([[3.0, 5.0], [2.0, 3.0]]))
    # |4-3| + |5-5| + |1-2| + |1-3| = 4 over 2 objects x 2 coordinates.
    assert loss.item() == pytest.approx(4 / (4 + 1e-4), rel=1e-6)
    empty = gathered_l1_loss(pred, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    assert empty.item() == 0.0
