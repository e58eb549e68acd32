"""Generalized IoU loss (Rezatofighi et al., CVPR 2019, Algorithm 1)."""
from __future__ import annotations

import torch
from torchvision.ops import generalized_box_iou_loss

__all__ = ["giou_loss"]


def giou_loss(
    boxes1: torch.Tensor,
    boxes2: torch.Tensor,
    reduction: str = "none",
    eps: float = 1e-7,
) -> torch.Tensor:
    """Element-wise ``1 - GIoU(boxes1[i], boxes2[i])`` for matched box pairs.

    Thin wrapper on :func:`torchvision.ops.generalized_box_iou_loss` (fvcore's ``giou_loss``
    computes the same thing). The loss is invariant to a common scale, so boxes may be absolute
    pixels or normalised, as long as both use the same frame.

    Args:
        boxes1, boxes2: ``(N, 4)`` (or ``(..., 4)``) XYXY boxes, x2 >= x1 and y2 >= y1.
        reduction: ``"none"`` -> ``(N,)``, ``"mean"`` or ``"sum"`` -> scalar (``"mean"`` of an
            empty input is 0, not NaN).
        eps: numerical guard for the divisions.

    Returns:
        float32 loss in ``[0, 2]`` per pair (0 for identical boxes), computed in float32 whatever
        the input dtype (areas of pixel boxes overflow float16).

    Raises:
        ValueError: shapes differ, last dim is not 4, or ``reduction`` unknown.
    """
    if boxes1.shape != boxes2.shape or boxes1.shape[-1] != 4:
        raise ValueError(
            f"giou_loss: expected two (..., 4) XYXY tensors of equal shape, "
            f"got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"giou_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return generalized_box_iou_loss(boxes1.float(), boxes2.float(), reduction=reduction, eps=eps)
