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
from common.losses import giou_loss, sigmoid_focal_loss
from common.utils import comm

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

    @staticmethod
    def _src_permutation_idx(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx, src_idx

    def loss_labels(
        self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Indices, num_boxes: float
    ) -> Dict[str, torch.Tensor]:
        """Focal (or softmax CE) classification loss; unmatched predictions are all-negative."""
        logits = outputs["pred_logits"]  # (B, nr, K) or (B, nr, K + 1)
        batch_idx, src_idx = self._src_permutation_idx(indices)
        batch_idx, src_idx = batch_idx.to(logits.device), src_idx.to(logits.device)
        matched_classes = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)])
        if self.use_focal:
            onehot = torch.zeros_like(logits)
            onehot[batch_idx, src_idx, matched_classes] = 1
            loss = sigmoid_focal_loss(
                logits.flatten(0, 1), onehot.flatten(0, 1), self.focal_alpha, self.focal_gamma, reduction="sum"
            )
            return {"loss_ce": loss / num_boxes}
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = matched_classes
        return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)}

    def loss_boxes(
        self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Indices, num_boxes: float
    ) -> Dict[str, torch.Tensor]:
        """L1 on XYXY boxes divided by the image's ``[w, h, w, h]`` and GIoU on absolute XYXY."""
        pred = outputs["pred_boxes"]
        batch_idx, src_idx = self._src_permutation_idx(indices)
        batch_idx, src_idx = batch_idx.to(pred.device), src_idx.to(pred.device)
        src_boxes = pred[batch_idx, src_idx]  # (P, 4)
        tgt_boxes = torch.cat([t["boxes_xyxy"][j.to(pred.device)] for t, (_, j) in zip(targets, indices)])
        img_whwh = torch.stack([t["image_size_xyxy"] for t in targets]).to(pred)[batch_idx]  # (P, 4)

        loss_giou = giou_loss(src_boxes, tgt_boxes, reduction="sum") / num_boxes
        loss_bbox = F.l1_loss(src_boxes / img_whwh, tgt_boxes / img_whwh, reduction="sum") / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def get_num_boxes(self, targets: List[dict], device: torch.device) -> float:
        """Average number of GT boxes per process over the global batch, at least 1."""
        local = sum(len(t["labels"]) for t in targets)
        total = comm.all_reduce_sum(local, device=device)
        return max(total / comm.get_world_size(), 1.0)

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
