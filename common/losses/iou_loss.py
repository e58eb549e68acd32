"""IoU-type losses on ``(l, t, r, b)`` distances from a common point (FCOS, Tian et al., ICCV 2019,
Sec. 3.1 Eq. 2; UnitBox IoU loss; GIoU of Rezatofighi et al., CVPR 2019).

The two boxes of a pair share their reference point, so intersection and enclosing box follow from
the distances alone (no coordinates): ``I = (min(l) + min(r)) * (min(t) + min(b))`` and
``C = (max(l) + max(r)) * (max(t) + max(b))``.

Conventions of the authors' codes (``smooth``):

* ``smooth=True`` (official FCOS ``fcos_core/layers/iou_loss.py``, AdelaiDet
  ``adet/layers/iou_loss.py``): ``IoU = (I + 1) / (U + 1)`` and ``GIoU = IoU - (C - U) / (C + 1e-7)``.
  The +1 is in the units of the distances: stride units in AdelaiDet and FCOS-imprv, where it is
  large; pixels in the original FCOS.
* ``smooth=False`` (cvpods ``cvpods/modeling/losses/iou_loss.py``, AutoAssign):
  ``IoU = I / max(U, eps)`` and ``GIoU = IoU - (C - U) / max(C, eps)`` with ``eps`` = float32 eps.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["IOU_LOSS_TYPES", "iou_loss"]

IOU_LOSS_TYPES = ("iou", "linear_iou", "giou")
_REDUCTIONS = ("none", "sum", "mean")


def iou_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    loss_type: str = "giou",
    smooth: bool = True,
    reduction: str = "sum",
    eps: Optional[float] = None,
) -> torch.Tensor:
    """IoU-type loss of predicted vs target distances to the four box sides.

    Args:
        pred, target: ``(N, 4)`` non-negative ``(l, t, r, b)`` from the same points (any unit, the
            same for both). Computed in float32 whatever the input dtype.
        weight: optional ``(N,)`` per-pair weight (FCOS: the centerness target).
        loss_type: ``"iou"`` (``-log IoU``, UnitBox / original FCOS), ``"linear_iou"`` (``1 - IoU``)
            or ``"giou"`` (``1 - GIoU``, FCOS-imprv / AdelaiDet default).
        smooth: the +1 smoothing of FCOS (see module docstring); False is cvpods' convention.
        reduction: ``"sum"`` (the authors': the caller divides by its normaliser), ``"mean"`` or
            ``"none"`` (``(N,)``). An empty input gives 0 for ``"sum"``/``"mean"``.
        eps: guard of the divisions; default 1e-7 (added to C) with ``smooth``, float32 eps
            (clamp of U and C) without.

    Returns:
        scalar, or ``(N,)`` for ``reduction="none"``.

    Raises:
        ValueError: shape mismatch, unknown ``loss_type`` or ``reduction``.
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 4:
        raise ValueError(f"iou_loss: expected pred and target (N, 4) ltrb, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if loss_type not in IOU_LOSS_TYPES:
        raise ValueError(f"iou_loss: loss_type must be one of {IOU_LOSS_TYPES}, got {loss_type!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"iou_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weight is not None and weight.shape != pred.shape[:1]:
        raise ValueError(f"iou_loss: weight must have shape {tuple(pred.shape[:1])}, got {tuple(weight.shape)}")
    pred = pred.float()
    target = target.float()
    pl, pt, pr, pb = pred.unbind(dim=1)
    tl, tt, tr, tb = target.unbind(dim=1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    w_inter = torch.min(pl, tl) + torch.min(pr, tr)
    h_inter = torch.min(pt, tt) + torch.min(pb, tb)
    w_enclose = torch.max(pl, tl) + torch.max(pr, tr)
    h_enclose = torch.max(pt, tt) + torch.max(pb, tb)
    area_inter = w_inter * h_inter
    area_union = target_area + pred_area - area_inter
    area_enclose = w_enclose * h_enclose
    if smooth:
        eps = 1e-7 if eps is None else eps
        ious = (area_inter + 1.0) / (area_union + 1.0)
        gious = ious - (area_enclose - area_union) / (area_enclose + eps)
    else:
        eps = torch.finfo(torch.float32).eps if eps is None else eps
        ious = area_inter / area_union.clamp(min=eps)
        gious = ious - (area_enclose - area_union) / area_enclose.clamp(min=eps)
    if loss_type == "iou":
        losses = -torch.log(ious)
    elif loss_type == "linear_iou":
        losses = 1.0 - ious
    else:
        losses = 1.0 - gious
    if weight is not None:
        losses = losses * weight.float()
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean() if losses.numel() else losses.sum()
    return losses
