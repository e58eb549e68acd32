"""Set prediction loss of Sparse R-CNN (paper Sec. 3.2, Eq. 1; authors' ``loss.py``).

Matching is done by :class:`common.assigners.HungarianMatcher`; losses are the sigmoid focal loss
on class logits (no background column), L1 on image-normalised XYXY boxes and GIoU on absolute
XYXY boxes, each summed over matched pairs and divided by the number of GT boxes in the global
batch.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.assigners import HungarianMatcher
from common.losses import matched_batch_index, num_boxes_across_processes, set_box_losses, set_focal_loss

__all__ = ["SetCriterion"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


class SetCriterion(nn.Module):
    """Hungarian-matched detection losses with optional deep supervision.

    ``forward`` returns *unweighted* losses ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last
    stage and, for every entry of ``outputs["aux_outputs"]`` (stage ``i``), the same keys
    suffixed ``_i``; every stage is matched independently. :attr:`weight_dict` gives the weight
    of each key (the detector multiplies).

    Targets are dicts with ``"labels"`` ``(M,)`` int64, ``"boxes_xyxy"`` ``(M, 4)`` XYXY_ABS and
    ``"image_size_xyxy"`` ``(4,)`` ``[w, h, w, h]``; ``M`` may be 0 (only negatives then).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Dict[str, float],
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("labels", "boxes"),
        use_focal: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        unknown = set(losses) - {"labels", "boxes"}
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {sorted(unknown)}; use 'labels' and/or 'boxes'")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.use_focal = use_focal
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        if not use_focal:
            # Softmax CE over K + 1 classes with a down-weighted "no object" class (DETR).
            empty_weight = torch.ones(num_classes + 1)
            empty_weight[-1] = eos_coef
            self.register_buffer("empty_weight", empty_weight)

    def loss_labels(
        self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Indices, num_boxes: float
    ) -> Dict[str, torch.Tensor]:
        """Focal (or softmax CE) classification loss; unmatched predictions are all-negative."""
        logits = outputs["pred_logits"]  # (B, nr, K) or (B, nr, K + 1)
        if self.use_focal:
            return {"loss_ce": set_focal_loss(logits, targets, indices, num_boxes, self.focal_alpha, self.focal_gamma)}
        batch_idx, src_idx = matched_batch_index(indices, logits.device)
        matched_classes = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = matched_classes.to(logits.device)
        # float32 also under autocast, like every loss here.
        return {"loss_ce": F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.empty_weight)}

    def loss_boxes(
        self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Indices, num_boxes: float
    ) -> Dict[str, torch.Tensor]:
        """L1 on XYXY boxes divided by the image's ``[w, h, w, h]`` and GIoU on absolute XYXY."""
        return set_box_losses(outputs["pred_boxes"], targets, indices, num_boxes)

    def get_num_boxes(self, targets: List[dict], device: torch.device) -> float:
        """Average number of GT boxes per process over the global batch, at least 1."""
        return num_boxes_across_processes(targets, device)

    def _stage_losses(self, outputs: Dict[str, torch.Tensor], targets: List[dict], num_boxes: float, suffix: str):
        indices = self.matcher(outputs, targets)
        losses: Dict[str, torch.Tensor] = {}
        for name in self.losses:
            fn = self.loss_labels if name == "labels" else self.loss_boxes
            losses.update({k + suffix: v for k, v in fn(outputs, targets, indices, num_boxes).items()})
        return losses

    def forward(self, outputs: Dict[str, object], targets: List[dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``"pred_logits"`` ``(B, nr, K)``, ``"pred_boxes"`` ``(B, nr, 4)`` XYXY_ABS of
                the last stage, optional ``"aux_outputs"``: list of such dicts (earlier stages).
            targets: B target dicts (see class docstring).

        Returns:
            dict of scalar losses (unweighted), see class docstring.
        """
        last = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
        num_boxes = self.get_num_boxes(targets, last["pred_logits"].device)
        losses = self._stage_losses(last, targets, num_boxes, "")
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._stage_losses(aux, targets, num_boxes, f"_{i}"))
        return losses
