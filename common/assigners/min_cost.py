"""Minimum Cost Assignment of OneNet (Sun et al., "OneNet: Towards End-to-End One-Stage Object
Detection", 2020/ICML 2021, Sec. 3, Eq. 3 and Algorithm 1).

For every ground truth exactly one location (grid point / anchor) is positive, chosen by the
cost ``C = cost_class * C_cls + cost_bbox * C_L1 + cost_giou * C_giou``; all other locations are
negatives. Two modes:

* ``"hungarian"`` (default): the authors' released code (``projects/OneNet/onenet/loss_predefine.py``
  ``MinCostMatcher``) solves a one-to-one assignment over all locations with
  ``scipy.optimize.linear_sum_assignment``, so two GTs never share a location. Use it to reproduce
  the released checkpoints.
* ``"argmin"``: the paper's Algorithm 1 (and the authors' older ``loss.py``): each GT takes the
  location of minimum cost independently (``C.argmin(dim=0)``); two GTs may pick the same location.

The location cost (L1 + GIoU) and the classification cost have separate weights, so the paper's
Table 1 ablation (``cost_class = 0``: location cost only) is a config change.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import generalized_box_iou

from common.losses import focal_classification_cost

__all__ = ["MinCostMatcher"]

_MODES = ("hungarian", "argmin")


class MinCostMatcher(nn.Module):
    """One positive location per ground truth by minimum matching cost (OneNet Sec. 3.2).

    Cost between location ``i`` and GT ``j`` of the same image::

        C[i, j] = cost_class * focal_classification_cost(logits_i, c_j)          # Eq. 3, C_cls
                + cost_bbox  * || b_i / [w, h, w, h] - g_j / [w, h, w, h] ||_1   # C_L1, XYXY
                + cost_giou  * (-GIoU(b_i, g_j))                                 # C_giou, XYXY_ABS

    computed in one vectorised pass over all ``N`` locations and ``M`` GTs of the image
    (:meth:`cost_matrix`, ``(N, M)``). Weights default to the paper's 2 / 5 / 2.

    Args:
        cost_class, cost_bbox, cost_giou: non-negative weights (``MODEL.OneNet.CLASS_COST``,
            ``L1_COST``, ``GIOU_COST``); at least one must be positive.
        alpha, gamma: focal parameters of the classification cost (0.25, 2.0).
        mode: ``"hungarian"`` (one-to-one, authors' released code) or ``"argmin"`` (Algorithm 1).

    Raises:
        ValueError: unknown ``mode``, negative weights or all weights zero.

    The module holds no parameters or buffers (nothing in the state dict).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        mode: str = "hungarian",
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"MinCostMatcher: mode must be one of {_MODES} (MODEL.OneNet.MATCHER_MODE), got {mode!r}")
        if min(cost_class, cost_bbox, cost_giou) < 0:
            raise ValueError(
                f"MinCostMatcher: cost weights must be >= 0, got class={cost_class} l1={cost_bbox} giou={cost_giou}"
            )
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("MinCostMatcher: all cost weights (MODEL.OneNet.CLASS_COST/L1_COST/GIOU_COST) are 0")
        self.cost_class = float(cost_class)
        self.cost_bbox = float(cost_bbox)
        self.cost_giou = float(cost_giou)
        self.alpha = alpha
        self.gamma = gamma
        self.mode = mode

    @torch.no_grad()
    def cost_matrix(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        gt_classes: torch.Tensor,
        gt_boxes: torch.Tensor,
        image_size_xyxy: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost of one image.

        Args:
            logits: ``(N, K)`` classification logits of the N locations.
            boxes: ``(N, 4)`` predicted XYXY_ABS boxes (pixels of the resized network input).
            gt_classes: ``(M,)`` int64 in ``[0, K)``.
            gt_boxes: ``(M, 4)`` XYXY_ABS pixels.
            image_size_xyxy: ``(4,)`` ``[w, h, w, h]`` of the resized, unpadded image.

        Returns:
            ``(N, M)`` float32 cost (lower = better), whatever the input dtype (autocast is
            disabled inside; exact ``logsigmoid`` focal term); ``(N, 0)`` when ``M == 0``. Terms whose
            weight is 0 are skipped (not computed).
        """
        n, m = boxes.shape[0], gt_boxes.shape[0]
        cost = boxes.new_zeros((n, m), dtype=torch.float32)
        if m == 0 or n == 0:
            return cost
        # float32 also under autocast (cdist / GIoU of pixel boxes and the focal logs need it).
        with torch.autocast(device_type=boxes.device.type, enabled=False):
            if self.cost_class:
                cost += self.cost_class * focal_classification_cost(logits.float(), gt_classes, self.alpha, self.gamma)
            boxes = boxes.float()
            gt_boxes = gt_boxes.float().to(boxes.device)
            if self.cost_bbox:
                whwh = image_size_xyxy.to(boxes)
                cost += self.cost_bbox * torch.cdist(boxes / whwh, gt_boxes / whwh, p=1)
            if self.cost_giou:
                cost += self.cost_giou * -generalized_box_iou(boxes, gt_boxes)
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Assign one location to every GT of every image.

        Args:
            outputs: ``"pred_logits"`` ``(B, N, K)`` logits and ``"pred_boxes"`` ``(B, N, 4)``
                XYXY_ABS boxes; N = all locations of an image (e.g. ``H/4 * W/4`` grid points, or
                the concatenation of FPN levels/anchors).
            targets: B dicts with ``"labels"`` ``(M_b,)`` int64, ``"boxes_xyxy"`` ``(M_b, 4)``
                XYXY_ABS and ``"image_size_xyxy"`` ``(4,)`` ``[w, h, w, h]``; ``M_b`` may be 0.

        Returns:
            B tuples ``(loc_idx, gt_idx)`` of int64 CPU tensors. ``"hungarian"``: length
            ``min(N, M_b)``, distinct locations, ``loc_idx`` ascending. ``"argmin"``: length
            ``M_b``, ``gt_idx = arange(M_b)``, locations may repeat. Both empty when ``M_b == 0``.

        Raises:
            ValueError: batch sizes of ``outputs`` and ``targets`` differ.
            FloatingPointError: non-finite cost (diverged predictions), naming the image.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"MinCostMatcher: {logits.shape[0]} predictions but {len(targets)} targets")
        empty = torch.empty(0, dtype=torch.int64)
        indices: List[Tuple[torch.Tensor, torch.Tensor]] = []
        for b, t in enumerate(targets):
            m = len(t["labels"])
            if m == 0:
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits[b], boxes[b], t["labels"], t["boxes_xyxy"], t["image_size_xyxy"])
            if not torch.isfinite(cost).all():
                raise FloatingPointError(
                    f"MinCostMatcher: non-finite matching cost for image {b} of the batch ({m} GTs); "
                    "predictions have diverged (check SOLVER.BASE_LR / gradient clipping)"
                )
            if self.mode == "argmin":
                loc = cost.argmin(dim=0).cpu()
                indices.append((loc, torch.arange(m, dtype=torch.int64)))
            else:
                rows, cols = linear_sum_assignment(cost.cpu().numpy())
                indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"alpha={self.alpha}, gamma={self.gamma}, mode={self.mode!r}"
        )
