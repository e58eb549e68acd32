"""Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code", ICCV
2017) and its box-merging variant, as the keypoint detectors' Cython ``external/nms.pyx``
(``soft_nms``, ``soft_nms_merge``) in princeton-vl/CornerNet, xingyizhou/CenterNet and
Duankaiwen/CenterNet; torchvision has no soft-NMS.

Semantics copied from that code:

* Repeatedly the highest-scoring remaining box is kept; every remaining box of the same class
  that *overlaps* it (intersection width and height > 0) has its score multiplied by a weight
  of their IoU ``o``: ``"gaussian"`` ``exp(-o^2 / sigma)`` (method 2), ``"linear"`` ``1 - o`` if
  ``o > iou_threshold`` else 1 (method 1), ``"hard"`` 0 if ``o > iou_threshold`` else 1 (method 0).
* An overlapping box whose (decayed) score is below ``score_threshold`` is discarded; a box that
  never overlaps a kept box is never discarded, whatever its score.
* ``plus_one``: the Cython code measures boxes in the legacy pixel convention, width
  ``x2 - x1 + 1`` (also for the intersection); ``False`` gives the usual continuous IoU.
* Merge variant: the kept box is replaced by the average of itself and the remaining boxes it
  overlaps, box ``j`` weighted by ``(1 - weight_j) ** weight_exp`` times a per-box coordinate
  weight (CornerNet: the top-left corner score for ``x1, y1``, the bottom-right one for
  ``x2, y2``; the kept box itself with weight 1 times its own).

The selection is sequential by definition; each step is vectorised over all boxes (one overlap
row per kept box, no ``N x N`` matrix), on the device of the inputs, in float32.

Deviation: xingyizhou/CenterNet's ``merge_outputs`` ignores the ``keep`` list the Cython function
returns, so rows the function overwrote while discarding boxes (copies of other boxes) stay in
its array until the top-100 cut; here only the kept boxes are returned.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["soft_nms", "soft_nms_merge", "SOFT_NMS_METHODS"]

SOFT_NMS_METHODS = ("linear", "gaussian", "hard")


def _check(boxes: torch.Tensor, scores: torch.Tensor, idxs: Optional[torch.Tensor], method: str) -> None:
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"soft-NMS method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"soft-NMS: boxes must be (N, 4) XYXY, got {tuple(boxes.shape)}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"soft-NMS: scores must be ({boxes.shape[0]},), got {tuple(scores.shape)}")
    if idxs is not None and idxs.shape != (boxes.shape[0],):
        raise ValueError(f"soft-NMS: idxs must be ({boxes.shape[0]},), got {tuple(idxs.shape)}")


def _run(boxes, scores, idxs, method, sigma, iou_threshold, score_threshold, plus_one, coord_weights, weight_exp):
    n = boxes.shape[0]
    device = boxes.device
    boxes = boxes.float()
    scores = scores.float().clone()
    off = 1.0 if plus_one else 0.0
    areas = (boxes[:, 2] - boxes[:, 0] + off) * (boxes[:, 3] - boxes[:, 1] + off)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    neg_inf = torch.tensor(float("-inf"), device=device)
    keep, kept_scores, merged = [], [], []
    for _ in range(n):
        best, i = torch.where(alive, scores, neg_inf).max(0)
        if not bool(best > neg_inf):
            break
        alive[i] = False
        box = boxes[i]
        iw = torch.minimum(boxes[:, 2], box[2]) - torch.maximum(boxes[:, 0], box[0]) + off
        ih = torch.minimum(boxes[:, 3], box[3]) - torch.maximum(boxes[:, 1], box[1]) + off
        inter = iw.clamp(min=0) * ih.clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        touched = alive & (iw > 0) & (ih > 0)
        if idxs is not None:
            touched &= idxs == idxs[i]
        if method == "gaussian":
            weight = torch.exp(-(iou * iou) / sigma)
        elif method == "linear":
            weight = torch.where(iou > iou_threshold, 1.0 - iou, torch.ones_like(iou))
        else:
            weight = (iou <= iou_threshold).float()
        if coord_weights is not None:
            mw = (1.0 - weight).pow(weight_exp) * touched.float()
            wxy = torch.stack([coord_weights[:, 0], coord_weights[:, 0], coord_weights[:, 1], coord_weights[:, 1]], 1)
            num = box * wxy[i] + (boxes * wxy * mw[:, None]).sum(0)
            den = wxy[i] + (wxy * mw[:, None]).sum(0)
            merged.append(num / den)
        keep.append(i)
        kept_scores.append(scores[i])
        scores = torch.where(touched, scores * weight, scores)
        alive &= ~(touched & (scores < score_threshold))
    if not keep:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, scores.new_zeros(0), boxes.new_zeros(0, 4)
    return torch.stack(keep), torch.stack(kept_scores), (torch.stack(merged) if merged else None)


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: Optional[torch.Tensor] = None,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    plus_one: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS, per class when ``idxs`` is given (see the module docstring).

    Args:
        boxes: ``(N, 4)`` XYXY boxes (any consistent unit, e.g. XYXY_ABS pixels).
        scores: ``(N,)``.
        idxs: ``(N,)`` int class ids (boxes of different classes never interact), or None.
        method: ``"gaussian"``, ``"linear"`` or ``"hard"``.
        sigma: Gaussian ``sigma`` (0.5 in the authors' code).
        iou_threshold: ``Nt`` of the linear and hard methods (unused by the Gaussian one).
        score_threshold: discard threshold (0.001).
        plus_one: legacy ``+1`` pixel widths in the IoU (the Cython code's convention).

    Returns:
        ``keep`` ``(M,)`` int64 indices into ``boxes`` in selection order (scores descending)
        and their decayed scores ``(M,)`` float32.

    Raises:
        ValueError: unknown ``method`` or badly shaped inputs.
    """
    _check(boxes, scores, idxs, method)
    keep, kept, _ = _run(boxes, scores, idxs, method, float(sigma), float(iou_threshold), float(score_threshold),
                         bool(plus_one), None, 0.0)
    return keep, kept


def soft_nms_merge(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: Optional[torch.Tensor] = None,
    coord_weights: Optional[torch.Tensor] = None,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    plus_one: bool = False,
    weight_exp: float = 10.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft-NMS whose kept boxes are weighted averages of the boxes they suppress
    (``soft_nms_merge`` of the Cython code; CornerNet's multi-scale test, ``merge_bbox``).

    Args:
        boxes, scores, idxs, method, sigma, iou_threshold, score_threshold, plus_one: as :func:`soft_nms`.
        coord_weights: ``(N, 2)``: weight of each box's ``(x1, y1)`` and of its ``(x2, y2)``
            (CornerNet: top-left and bottom-right corner scores); None = ``scores`` for both.
        weight_exp: exponent of ``(1 - weight)`` (CornerNet's multi-scale config: 10; the Cython
            function's own default is 6).

    Returns:
        ``keep`` ``(M,)``, decayed scores ``(M,)`` and the merged boxes ``(M, 4)`` XYXY (float32).

    Raises:
        ValueError: unknown ``method`` or badly shaped inputs.
    """
    _check(boxes, scores, idxs, method)
    if coord_weights is None:
        coord_weights = torch.stack([scores, scores], 1)
    if coord_weights.shape != (boxes.shape[0], 2):
        raise ValueError(f"soft_nms_merge: coord_weights must be ({boxes.shape[0]}, 2), got {tuple(coord_weights.shape)}")
    return _run(boxes, scores, idxs, method, float(sigma), float(iou_threshold), float(score_threshold),
                bool(plus_one), coord_weights.float(), float(weight_exp))
