"""Inference of dense detectors: per-level candidate selection, class-aware NMS, detections per image.

One function for FCOS, ATSS, VFNet and AutoAssign, whose authors' codes differ only in the order of
the score threshold and the per-level top-k, and in the score that ranks the top-k:

============  =======================================================  ============================
detector      per level                                                 source
============  =======================================================  ============================
FCOS          pairs with cls > 0.05, then top-1000 pairs by sqrt(cls*ctr) ``fcos_outputs.py`` (AD) /
                                                                        ``inference.py`` (FC)
ATSS (mmdet)  top-1000 locations by max_c cls*ctr, then pairs cls > 0.05  ``atss_head.py``,
              scored cls*ctr                                            ``multiclass_nms``
VFNet         top-1000 locations by max_c cls, then pairs cls > 0.05    ``vfnet_head.py``
AutoAssign    top-1000 pairs by cls*obj, then > 0.05 (same set as        ``auto_assign.py``
              threshold-then-top-k when one score does both)
============  =======================================================  ============================

then, over all levels: clip to the image, class-aware ``batched_nms`` and the top
``max_detections`` by score.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from common.layers import batched_nms
from common.structures import Boxes, Instances

__all__ = ["TOPK_MODES", "dense_detection_postprocess"]

TOPK_MODES = ("pairs", "locations")


def _select_level(boxes: torch.Tensor, scores: torch.Tensor, thresh_scores: torch.Tensor, score_thresh: float,
                  topk: int, mode: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if mode == "locations":
        if 0 < topk < scores.shape[0]:
            keep_loc = scores.max(dim=1).values.topk(topk).indices
            boxes, scores, thresh_scores = boxes[keep_loc], scores[keep_loc], thresh_scores[keep_loc]
        loc, cls = torch.nonzero(thresh_scores > score_thresh, as_tuple=True)
        return boxes[loc], scores[loc, cls], cls
    # "pairs": threshold (location, class) pairs, then keep the top-k candidates by score.
    loc, cls = torch.nonzero(thresh_scores > score_thresh, as_tuple=True)
    cand_scores = scores[loc, cls]
    if 0 < topk < cand_scores.numel():
        cand_scores, idx = cand_scores.topk(topk)
        loc, cls = loc[idx], cls[idx]
    return boxes[loc], cand_scores, cls


def dense_detection_postprocess(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    image_size: Tuple[int, int],
    *,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    threshold_scores: Optional[Sequence[torch.Tensor]] = None,
    topk_mode: str = "pairs",
    clip: bool = True,
) -> Instances:
    """Detections of one image from per-level dense predictions.

    Args:
        boxes: per level ``(R_l, 4)`` decoded XYXY_ABS boxes in the network input frame (one box per
            location, class-agnostic).
        scores: per level ``(R_l, K)`` final scores in [0, 1]; they rank the top-k and NMS, and are
            the output ``scores`` (e.g. ``sqrt(cls * ctr)`` for FCOS, ``cls`` for VFNet).
        image_size: ``(h, w)`` of the resized, unpadded input (boxes are clipped to it).
        score_thresh: a (location, class) pair is a candidate when its threshold score is
            ``> score_thresh``.
        topk_candidates: per level, candidates kept before NMS (``<= 0``: all).
        nms_thresh: IoU threshold of the class-aware NMS (``torchvision.ops.batched_nms``);
            ``>= 1`` disables NMS.
        max_detections: detections kept per image (``<= 0``: all), highest scores first.
        threshold_scores: per level ``(R_l, K)`` scores compared with ``score_thresh`` (default:
            ``scores``); FCOS and ATSS threshold the classification probability before it is
            multiplied by centerness.
        topk_mode: ``"pairs"``: threshold, then the top-k (location, class) pairs by score (FCOS,
            AutoAssign); ``"locations"``: the top-k locations by their best class score, then the
            threshold on their pairs (mmdet ``nms_pre``: ATSS, VFNet).
        clip: clip the boxes to ``image_size`` before NMS (all four authors' codes do).

    Returns:
        ``Instances(image_size)`` with ``pred_boxes`` (Boxes, float32), ``scores`` (descending) and
        ``pred_classes`` (int64 in ``[0, K)``).

    Raises:
        ValueError: unknown ``topk_mode`` or mismatched per-level lists.
    """
    if topk_mode not in TOPK_MODES:
        raise ValueError(f"dense_detection_postprocess: topk_mode must be one of {TOPK_MODES}, got {topk_mode!r}")
    if threshold_scores is None:
        threshold_scores = scores
    if not (len(boxes) == len(scores) == len(threshold_scores)):
        raise ValueError(
            f"dense_detection_postprocess: {len(boxes)} box levels, {len(scores)} score levels and "
            f"{len(threshold_scores)} threshold levels"
        )
    out_boxes: List[torch.Tensor] = []
    out_scores: List[torch.Tensor] = []
    out_classes: List[torch.Tensor] = []
    for b, s, t in zip(boxes, scores, threshold_scores):
        if b.shape[0] != s.shape[0] or s.shape != t.shape:
            raise ValueError(
                f"dense_detection_postprocess: boxes {tuple(b.shape)}, scores {tuple(s.shape)} and "
                f"threshold scores {tuple(t.shape)} of a level do not match"
            )
        lb, ls, lc = _select_level(b.float(), s.float(), t.float(), score_thresh, topk_candidates, topk_mode)
        out_boxes.append(lb)
        out_scores.append(ls)
        out_classes.append(lc)
    det_boxes = Boxes(torch.cat(out_boxes))
    det_scores = torch.cat(out_scores)
    det_classes = torch.cat(out_classes)
    if clip:
        det_boxes.clip(image_size)
    if nms_thresh < 1.0:
        keep = batched_nms(det_boxes.tensor, det_scores, det_classes, nms_thresh)
    else:
        keep = det_scores.argsort(descending=True)
    if max_detections > 0:
        keep = keep[:max_detections]
    result = Instances(image_size)
    result.pred_boxes = det_boxes[keep]
    result.scores = det_scores[keep]
    result.pred_classes = det_classes[keep]
    return result
