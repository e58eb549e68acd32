"""Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020, Algorithm 1), batched.

Behaviour of mmdetection's ``mmdet/core/bbox/assigners/atss_assigner.py`` (the assigner of the
released ATSS and VarifocalNet models), vectorised over images, anchors and GTs:

1. IoU between every anchor and GT, L2 distance between anchor centres and GT centres.
2. For every GT, on every level, the ``topk`` (9) anchors with the closest centres
   (``min(topk, anchors of the level)``) are candidates.
3. Threshold per GT = mean + standard deviation (unbiased, ``torch.std``) of the candidates' IoUs;
   candidates with IoU >= threshold are kept.
4. A kept candidate's centre must lie inside the GT: ``min(l, t, r, b) > 0.01`` pixels.
5. An anchor kept for several GTs goes to the one of highest IoU (the first GT on an exact tie).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

__all__ = ["ATSSAssigner", "pairwise_iou_batched"]


def pairwise_iou_batched(anchors: torch.Tensor, gt_boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of ``(A, 4)`` XYXY anchors with ``(B, M, 4)`` XYXY GTs -> ``(B, A, M)`` float32
    (union clamped at ``eps`` as mmdet's ``bbox_overlaps``)."""
    anchors = anchors.float()
    gt_boxes = gt_boxes.float()
    lt = torch.max(anchors[None, :, None, :2], gt_boxes[:, None, :, :2])
    rb = torch.min(anchors[None, :, None, 2:], gt_boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    area_g = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    union = area_a[None, :, None] + area_g[:, None, :] - inter
    return inter / union.clamp(min=eps)


class ATSSAssigner:
    """Assign anchors to GTs by ATSS (see module docstring).

    Args:
        topk: candidates per level and GT (9 in the paper and the released configs).
        min_inside_distance: a positive's centre must be farther than this (pixels) inside its GT
            (mmdet: 0.01).
    """

    def __init__(self, topk: int = 9, min_inside_distance: float = 0.01) -> None:
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        self.topk = int(topk)
        self.min_inside_distance = float(min_inside_distance)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, min_inside_distance={self.min_inside_distance})"

    @torch.no_grad()
    def __call__(
        self,
        anchors: Sequence[torch.Tensor],
        gt_boxes: torch.Tensor,
        gt_valid: torch.Tensor,
        anchor_valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            anchors: per level ``(A_l, 4)`` XYXY_ABS anchors (shared by the images of the batch).
            gt_boxes: ``(B, M, 4)`` XYXY_ABS GTs, padded (see ``common.modeling.dense_head.pad_gt_instances``).
            gt_valid: ``(B, M)`` bool, False for padding.
            anchor_valid: optional ``(B, A)`` bool, False for anchors outside an image's own padded
                extent in a batch of images of different sizes (mmdet ``valid_flags``): they are
                never candidates nor positives.

        Returns:
            ``(B, A)`` int64: index in ``[0, M)`` of the assigned GT, ``-1`` for negatives
            (``A = sum A_l``, anchors in level order).

        Raises:
            ValueError: inconsistent shapes.
        """
        if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4 or gt_valid.shape != gt_boxes.shape[:2]:
            raise ValueError(
                f"ATSSAssigner: expected gt_boxes (B, M, 4) and gt_valid (B, M), got "
                f"{tuple(gt_boxes.shape)} and {tuple(gt_valid.shape)}"
            )
        num_per_level: List[int] = [int(a.shape[0]) for a in anchors]
        all_anchors = torch.cat(list(anchors)).float()
        num_anchors = all_anchors.shape[0]
        b, m = gt_valid.shape
        if anchor_valid is not None and tuple(anchor_valid.shape) != (b, num_anchors):
            raise ValueError(f"ATSSAssigner: anchor_valid must be {(b, num_anchors)}, got {tuple(anchor_valid.shape)}")
        device = all_anchors.device
        if m == 0 or num_anchors == 0:
            return torch.full((b, num_anchors), -1, dtype=torch.int64, device=device)
        gt_boxes = gt_boxes.float()

        ious = pairwise_iou_batched(all_anchors, gt_boxes)  # (B, A, M)
        anchor_ctr = (all_anchors[:, :2] + all_anchors[:, 2:]) / 2.0  # (A, 2)
        gt_ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # (B, M, 2)
        distances = (anchor_ctr[None, :, None, :] - gt_ctr[:, None, :, :]).pow(2).sum(-1).sqrt()  # (B, A, M)
        if anchor_valid is not None:
            distances = distances.masked_fill(~anchor_valid[:, :, None], float("inf"))

        candidates = []
        start = 0
        for n in num_per_level:
            k = min(self.topk, n)
            if k > 0:
                idx = distances[:, start:start + n].topk(k, dim=1, largest=False).indices
                candidates.append(idx + start)
            start += n
        cand_idx = torch.cat(candidates, dim=1)  # (B, C, M)
        cand_ious = ious.gather(1, cand_idx)  # (B, C, M)
        threshold = cand_ious.mean(dim=1) + cand_ious.std(dim=1)  # (B, M)
        is_pos = cand_ious >= threshold[:, None, :]

        cx = anchor_ctr[:, 0][cand_idx]  # (B, C, M)
        cy = anchor_ctr[:, 1][cand_idx]
        g = gt_boxes[:, None, :, :]
        inside = torch.stack((cx - g[..., 0], cy - g[..., 1], g[..., 2] - cx, g[..., 3] - cy), dim=-1)
        is_pos &= inside.min(dim=-1).values > self.min_inside_distance
        is_pos &= gt_valid[:, None, :]
        if anchor_valid is not None:
            is_pos &= anchor_valid.gather(1, cand_idx.flatten(1)).view_as(cand_idx)

        neg_inf = torch.tensor(float("-inf"), device=device)
        # Candidate indices of one (image, GT) column are distinct, so the scatter has no collisions.
        pos_ious = torch.full_like(ious, float("-inf")).scatter_(1, cand_idx, torch.where(is_pos, cand_ious, neg_inf))
        best_iou, best_gt = pos_ious.max(dim=2)  # (B, A)
        return torch.where(best_iou > float("-inf"), best_gt, torch.full_like(best_gt, -1))
