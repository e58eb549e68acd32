"""OneNet training loss (paper Sec. 4 "Training"; authors' ``loss_predefine.py`` ``SetCriterion``).

Per stage: one positive location per GT from :class:`common.assigners.MinCostMatcher`; sigmoid
focal loss over *all* locations and classes (one-hot at the positives, zeros elsewhere), L1 on
XYXY boxes divided by the image's ``[w, h, w, h]`` and GIoU on absolute XYXY boxes at the
positives. Each is summed and divided by the number of GT boxes averaged over processes
(:func:`common.utils.comm.all_reduce_sum`), at least 1. Focal and GIoU come from
:mod:`common.losses`.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from common.assigners import MinCostMatcher
from common.losses import num_boxes_across_processes, set_box_losses, set_focal_loss

__all__ = ["SetCriterion"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


class SetCriterion(nn.Module):
    """Minimum-cost-assigned focal + L1 + GIoU losses, for one or several (multi-head) stages.

    Args:
        num_classes: K foreground classes (no background logit).
        matcher: the assigner; each stage is matched independently.
        weight_dict: weight of each loss key (the detector multiplies).
        focal_alpha, focal_gamma: focal loss parameters (0.25, 2.0).

    ``forward(stages, targets)`` returns unweighted scalars ``loss_ce``, ``loss_bbox``,
    ``loss_giou`` for stage 1 and, for stage ``s >= 2`` (multi-head training), the same keys
    suffixed ``_stage{s}``. Targets are dicts with ``"labels"`` ``(M,)`` int64, ``"boxes_xyxy"``
    ``(M, 4)`` XYXY_ABS and ``"image_size_xyxy"`` ``(4,)``; ``M`` may be 0 (the image then only
    contributes negatives to ``loss_ce``).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: MinCostMatcher,
        weight_dict: Dict[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def get_num_boxes(self, targets: List[dict], device: torch.device) -> float:
        """Number of GT boxes averaged over processes, at least 1."""
        return num_boxes_across_processes(targets, device)

    def stage_losses(self, stage: Dict[str, torch.Tensor], targets: List[dict], num_boxes: float) -> Dict[str, torch.Tensor]:
        """Losses of one stage: ``pred_logits`` ``(B, N, K)``, ``pred_boxes`` ``(B, N, 4)`` XYXY_ABS."""
        indices = self.matcher(stage, targets)
        loss_ce = set_focal_loss(stage["pred_logits"], targets, indices, num_boxes, self.focal_alpha, self.focal_gamma)
        return {"loss_ce": loss_ce, **set_box_losses(stage["pred_boxes"], targets, indices, num_boxes)}

    def forward(self, stages: List[Dict[str, torch.Tensor]], targets: List[dict]) -> Dict[str, torch.Tensor]:
        """See the class docstring; ``stages[0]`` is the stage used at inference."""
        num_boxes = self.get_num_boxes(targets, stages[0]["pred_logits"].device)
        losses: Dict[str, torch.Tensor] = {}
        for s, stage in enumerate(stages):
            suffix = "" if s == 0 else f"_stage{s + 1}"
            losses.update({k + suffix: v for k, v in self.stage_losses(stage, targets, num_boxes).items()})
        return losses
