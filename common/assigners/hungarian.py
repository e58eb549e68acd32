"""One-to-one (Hungarian) matching between set predictions and ground-truth boxes.

Source: DETR ``models/matcher.py`` (Carion et al., ECCV 2020) as adapted by Sparse R-CNN
(``projects/SparseRCNN/sparsercnn/loss.py``, Sun et al., CVPR 2021, Sec. 3.2 "Set prediction
loss"): focal classification cost, L1 on image-normalised XYXY boxes, GIoU on absolute XYXY.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import generalized_box_iou

from common.losses import focal_classification_cost

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """Assign each GT to exactly one prediction by minimising a weighted matching cost.

    ``C = cost_class * C_cls + cost_bbox * C_L1 + cost_giou * C_giou`` where

    * ``C_cls``: :func:`common.losses.focal_classification_cost` at the GT class
      (``use_focal=True``), or ``-softmax(logits)[gt class]`` (``use_focal=False``, logits then
      carry a trailing "no object" column);
    * ``C_L1``: L1 distance between XYXY boxes each divided by its image's ``[w, h, w, h]``;
    * ``C_giou``: ``-GIoU`` on absolute XYXY boxes.

    The cost is computed for the whole batch in one vectorised pass, then
    ``scipy.optimize.linear_sum_assignment`` solves each image's block. Images with more GTs
    than predictions get only ``N`` matches (scipy's rectangular assignment).

    The cost is float32 whatever the dtype of the predictions (``torch.autocast`` disabled
    inside; focal term in the exact ``logsigmoid`` form, see
    :func:`common.losses.focal_classification_cost`).

    Non-finite costs (NaN/inf, i.e. diverged predictions) raise ``FloatingPointError`` naming
    the image instead of letting scipy fail with an opaque "cost matrix is infeasible".

    Module has no parameters or buffers (nothing in the state dict).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        use_focal: bool = True,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all cost weights are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma
        self.use_focal = use_focal

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Match predictions to GTs image by image.

        Args:
            outputs: ``"pred_logits"`` ``(B, N, K)`` logits (``K + 1`` columns when
                ``use_focal=False``) and ``"pred_boxes"`` ``(B, N, 4)`` XYXY_ABS pixels of the
                network input (resized, unpadded image frame).
            targets: B dicts with ``"labels"`` ``(M_b,)`` int64 in ``[0, K)``, ``"boxes_xyxy"``
                ``(M_b, 4)`` XYXY_ABS pixels and ``"image_size_xyxy"`` ``(4,)`` = the image's
                ``[w, h, w, h]``. ``M_b`` may be 0.

        Returns:
            B tuples ``(pred_idx, gt_idx)`` of int64 CPU tensors of equal length
            ``min(N, M_b)``; ``pred_idx`` is sorted ascending; both are empty when ``M_b == 0``.

        Raises:
            ValueError: batch sizes of ``outputs`` and ``targets`` differ.
            FloatingPointError: the cost of an image contains NaN or inf.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        if len(targets) != bs:
            raise ValueError(f"HungarianMatcher: {bs} predictions but {len(targets)} targets")
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty.clone()) for _ in range(bs)]

        # The whole cost is computed in float32, also under autocast (float16 logits of +-20
        # would give -inf in the focal term, float16 pixel areas overflow in GIoU).
        with torch.autocast(device_type=logits.device.type, enabled=False):
            flat_logits = logits.flatten(0, 1).float()  # (B*N, K)
            flat_boxes = boxes.flatten(0, 1).float()  # (B*N, 4)
            tgt_ids = torch.cat([t["labels"] for t in targets]).long().to(flat_logits.device)
            tgt_boxes = torch.cat([t["boxes_xyxy"] for t in targets]).to(flat_boxes)
            if self.use_focal:
                c_cls = focal_classification_cost(flat_logits, tgt_ids, self.alpha, self.gamma)
            else:
                c_cls = -flat_logits.softmax(-1)[:, tgt_ids]

            # Each box is normalised by its own image size, so the L1 term is resolution independent.
            img_whwh = torch.stack([t["image_size_xyxy"] for t in targets]).to(flat_boxes)  # (B, 4)
            pred_norm = flat_boxes / img_whwh.repeat_interleave(num_queries, dim=0)
            tgt_norm = tgt_boxes / img_whwh.repeat_interleave(torch.as_tensor(sizes, device=img_whwh.device), dim=0)
            c_l1 = torch.cdist(pred_norm, tgt_norm, p=1)
            c_giou = -generalized_box_iou(flat_boxes, tgt_boxes)

            cost = self.cost_bbox * c_l1 + self.cost_class * c_cls + self.cost_giou * c_giou
        # Cross-image blocks are computed (cheaper than B small kernels) and discarded here.
        cost = cost.view(bs, num_queries, -1).cpu()
        indices = []
        for b, c in enumerate(cost.split(sizes, dim=-1)):
            block = c[b]
            if sizes[b] == 0:
                indices.append((empty, empty.clone()))
                continue
            if not torch.isfinite(block).all():
                raise FloatingPointError(
                    f"HungarianMatcher: non-finite matching cost for image {b} of the batch "
                    f"({sizes[b]} GTs); predictions have diverged (check LR / gradient clipping)"
                )
            rows, cols = linear_sum_assignment(block.numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"alpha={self.alpha}, gamma={self.gamma}, use_focal={self.use_focal}"
        )
