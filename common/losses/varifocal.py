"""Varifocal loss (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021,
Sec. 3.2 Eq. 2; authors' ``mmdet/models/losses/varifocal_loss.py``).

With ``p = sigmoid(logit)`` and the IoU-aware target ``q`` (the IoU of the box with its GT for the
GT class of a positive, 0 elsewhere)::

    VFL(p, q) = -q (q log p + (1 - q) log(1 - p))      if q > 0   (iou_weighted; weight 1 otherwise)
              = -alpha p^gamma log(1 - p)              if q = 0

i.e. ``BCE(logit, q) * w`` with ``w = q`` on positives and ``w = alpha |p - q|^gamma`` on negatives:
positives are not down-weighted (unlike focal loss), negatives are. As in the authors' code the
weight is not detached: the gradient also flows through ``p`` in ``alpha p^gamma``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["varifocal_loss"]

_REDUCTIONS = ("none", "sum", "mean")


def varifocal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    """Element-wise varifocal loss, computed in float32.

    Args:
        logits: ``(N, K)`` (any shape) classification logits, one column per foreground class.
        targets: same shape, IoU-aware targets ``q`` in [0, 1] (0 for negatives).
        alpha: weight of the negatives (0.75 in the paper).
        gamma: exponent of ``|p - q|`` on the negatives (2.0).
        iou_weighted: weight the positives by ``q`` (the paper); False weights them by 1.
        reduction: ``"sum"`` (the caller divides by the number of positives, as the authors' avg
            factor), ``"mean"`` or ``"none"``.

    Raises:
        ValueError: shape mismatch or unknown ``reduction``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"varifocal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"varifocal_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits = logits.float()
    targets = targets.float()
    prob = logits.sigmoid()
    pos = (targets > 0.0).float()
    pos_weight = targets * pos if iou_weighted else pos
    weight = pos_weight + alpha * (prob - targets).abs().pow(gamma) * (1.0 - pos)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    return loss
