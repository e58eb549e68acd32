"""Keypoint-heatmap losses of CornerNet / CenterNet ("Objects as Points").

* :func:`heatmap_focal_loss`: the penalty-reduced pixel-wise focal loss (CornerNet Eq. 1,
  CenterNet Eq. 1) with alpha = 2, beta = 4, normalised by the number of positive pixels.
* :func:`gathered_l1_loss`: L1 between predictions gathered at object centres and their targets,
  normalised per coordinate like the CenterNet authors' ``RegL1Loss`` (size and offset losses).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["heatmap_focal_loss", "gathered_l1_loss", "clamped_sigmoid"]


def clamped_sigmoid(logits: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``sigmoid(logits)`` clamped to ``[eps, 1 - eps]`` (the authors' training ``_sigmoid``), any shape.

    Computed and returned in float32 whatever the dtype of ``logits`` (in bfloat16 ``1 - 1e-4``
    rounds to 1 and ``log(1 - p)`` would be ``-inf``)."""
    return logits.float().sigmoid().clamp(min=eps, max=1 - eps)


def heatmap_focal_loss(
    pred: torch.Tensor, gt: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (float32 scalar, whatever the input dtype).

    ``L = -1/N * sum( (1-p)^alpha log p               where gt == 1,
                      (1-gt)^beta p^alpha log(1-p)     otherwise )``,
    N = number of pixels with ``gt == 1`` over the whole batch and all classes. With N = 0 the
    negative sum is returned unnormalised (as the authors do); no division by zero, no NaN.

    Args:
        pred: ``(B, C, H, W)`` probabilities in (0, 1) (use :func:`clamped_sigmoid` on logits so
            that ``log`` stays finite).
        gt: same shape, Gaussian heatmap targets in [0, 1] with exact 1.0 at object centres.
        alpha, beta: focusing and penalty-reduction exponents (2 and 4 in the papers).
        mask: optional, same shape, 1 where the loss counts and 0 in ignored regions (both terms
            are multiplied by it; N still counts every ``gt == 1`` pixel): CornerNet-Saccade's
            ``_focal_loss_mask`` ([CNL] ``core/models/py_utils/losses.py``) for objects cut by the
            training crop.

    Raises:
        ValueError: ``pred`` and ``gt`` shapes differ.

    Source: CornerNet (Law & Deng 2018) Eq. 1; CenterNet (Zhou et al. 2019) Eq. 1; the authors'
    ``_neg_loss`` ([XZ] ``src/lib/models/losses.py``, [CN] ``models/py_utils/kp_utils.py``).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"heatmap_focal_loss: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ")
    pred, gt = pred.float(), gt.float()  # float32 also under autocast
    pos = gt.eq(1).to(pred.dtype)
    neg = 1.0 - pos
    if mask is not None:
        if mask.shape != gt.shape:
            raise ValueError(f"heatmap_focal_loss: mask {tuple(mask.shape)} and gt {tuple(gt.shape)} differ")
        mask = mask.float()
        pos_w, neg_w = pos * mask, neg * mask
    else:
        pos_w, neg_w = pos, neg
    pos_loss = torch.log(pred) * (1 - pred).pow(alpha) * pos_w
    neg_loss = torch.log(1 - pred) * pred.pow(alpha) * (1 - gt).pow(beta) * neg_w
    num_pos = pos.sum()
    total = pos_loss.sum() + neg_loss.sum()
    return -total / num_pos.clamp(min=1.0) if float(num_pos) > 0 else -neg_loss.sum()


def gathered_l1_loss(
    pred: torch.Tensor, batch_index: torch.Tensor, flat_index: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """L1 loss of a dense regression map read at object centres (float32 scalar).

    ``sum_k |pred[b_k, :, i_k] - target_k| / (D * K + 1e-4)`` with K objects and D channels: the
    authors' ``RegL1Loss`` normalisation (mask expanded to D channels, so a per-coordinate mean).
    Zero objects give 0 (with a gradient path through ``pred``).

    Args:
        pred: ``(B, D, H, W)`` regression map (D = 2 for size ``(w, h)`` or offset ``(dx, dy)``).
        batch_index: ``(K,)`` int64 image index of each object.
        flat_index: ``(K,)`` int64 flat index ``y * W + x`` of each object's centre cell.
        target: ``(K, D)`` targets, in the units of ``pred`` (output-map pixels).

    Raises:
        ValueError: inconsistent shapes.

    Source: [XZ] ``src/lib/models/losses.py`` ``RegL1Loss``; CenterNet paper Eqs. 2-3.
    """
    B, D, H, W = pred.shape
    if target.dim() != 2 or target.shape[1] != D or batch_index.shape != target.shape[:1] \
            or flat_index.shape != target.shape[:1]:
        raise ValueError(
            f"gathered_l1_loss: pred {tuple(pred.shape)}, batch_index {tuple(batch_index.shape)}, "
            f"flat_index {tuple(flat_index.shape)}, target {tuple(target.shape)} are inconsistent"
        )
    gathered = pred.flatten(2)[batch_index, :, flat_index].float()  # (K, D), float32 also under autocast
    return F.l1_loss(gathered, target.to(gathered.dtype), reduction="sum") / (D * target.shape[0] + 1e-4)
