"""Losses of set-prediction detectors on matched (prediction, ground truth) pairs.

Shared by Sparse R-CNN (authors' ``sparsercnn/loss.py``) and OneNet (authors'
``onenet/loss_predefine.py``), whose criteria differ only in the assigner and the stages they
supervise. ``indices`` is what the assigners in :mod:`common.assigners` return: one
``(pred_idx, gt_idx)`` pair of int64 tensors per image.

Targets are dicts with ``"labels"`` ``(M,)`` int64 in ``[0, K)``, ``"boxes_xyxy"`` ``(M, 4)``
XYXY_ABS pixels and ``"image_size_xyxy"`` ``(4,)`` ``[w, h, w, h]`` of the network input
(resized, unpadded); ``M`` may be 0.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from common.utils import comm

from .focal import sigmoid_focal_loss
from .giou import giou_loss

__all__ = [
    "matched_batch_index",
    "num_boxes_across_processes",
    "set_focal_loss",
    "set_box_losses",
    "set_targets_from_instances",
    "weighted_losses",
]

Indices = Sequence[Tuple[torch.Tensor, torch.Tensor]]


def matched_batch_index(indices: Indices, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flatten per-image matches into ``(batch_idx, pred_idx)``, each ``(P,)`` int64 on ``device``,
    P = total matches; ``pred[batch_idx, pred_idx]`` gathers the matched predictions."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    pred_idx = torch.cat([src for src, _ in indices])
    return batch_idx.to(device), pred_idx.to(device)


def _matched_targets(targets: List[dict], indices: Indices, key: str, device: torch.device) -> torch.Tensor:
    return torch.cat([t[key][j.to(t[key].device)] for t, (_, j) in zip(targets, indices)]).to(device)


def num_boxes_across_processes(targets: List[dict], device: torch.device) -> float:
    """Number of GT boxes of the global batch divided by the number of processes, at least 1
    (the normaliser of every loss term in both authors' codes)."""
    total = comm.all_reduce_sum(sum(len(t["labels"]) for t in targets), device=device)
    return max(total / comm.get_world_size(), 1.0)


def set_focal_loss(
    logits: torch.Tensor,
    targets: List[dict],
    indices: Indices,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal loss over all predictions and classes, one-hot at the matched pairs.

    Args:
        logits: ``(B, N, K)`` class logits (no background column).
        num_boxes: normaliser (:func:`num_boxes_across_processes`).

    Returns:
        float32 scalar: sum of the focal loss / ``num_boxes``; unmatched predictions are pure negatives.
    """
    logits = logits.float()  # float32 also under autocast
    batch_idx, pred_idx = matched_batch_index(indices, logits.device)
    onehot = torch.zeros_like(logits)
    onehot[batch_idx, pred_idx, _matched_targets(targets, indices, "labels", logits.device)] = 1
    return sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="sum") / num_boxes


def set_box_losses(
    pred_boxes: torch.Tensor, targets: List[dict], indices: Indices, num_boxes: float
) -> Dict[str, torch.Tensor]:
    """L1 and GIoU losses of the matched boxes.

    Args:
        pred_boxes: ``(B, N, 4)`` XYXY_ABS pixels.

    Returns:
        ``{"loss_bbox": sum |pred - gt| of XYXY boxes divided by the image's [w, h, w, h],
        "loss_giou": sum (1 - GIoU) on absolute boxes}``, each / ``num_boxes``, float32 (also under
        autocast). With no match both are 0 and keep the graph.
    """
    batch_idx, pred_idx = matched_batch_index(indices, pred_boxes.device)
    src = pred_boxes[batch_idx, pred_idx].float()  # (P, 4), float32 also under autocast
    tgt = _matched_targets(targets, indices, "boxes_xyxy", src.device).to(src)
    whwh = torch.stack([t["image_size_xyxy"] for t in targets]).to(src)[batch_idx]  # (P, 4)
    return {
        "loss_bbox": F.l1_loss(src / whwh, tgt / whwh, reduction="sum") / num_boxes,
        "loss_giou": giou_loss(src, tgt, reduction="sum") / num_boxes,
    }


def set_targets_from_instances(
    instances: Sequence, num_classes: int, device: torch.device, num_classes_key: str = "NUM_CLASSES"
) -> List[Dict[str, torch.Tensor]]:
    """Ground-truth ``Instances`` (``gt_boxes`` XYXY_ABS in the network input, ``gt_classes``) ->
    the target dicts of this module (``labels``, ``boxes_xyxy``, ``image_size_xyxy``).

    Raises:
        ValueError: a class id outside ``[0, num_classes)``; the message names ``num_classes_key``
            (the config key to fix).
    """
    out = []
    for inst in instances:
        h, w = inst.image_size
        classes = inst.gt_classes.long().to(device)
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
            raise ValueError(
                f"GT class ids {sorted(set(classes.tolist()))} outside [0, {num_classes}): "
                f"{num_classes_key} does not match the dataset"
            )
        out.append({
            "labels": classes,
            "boxes_xyxy": inst.gt_boxes.tensor.float().to(device),
            "image_size_xyxy": torch.tensor([w, h, w, h], dtype=torch.float32, device=device),
        })
    return out


def weighted_losses(loss_dict: Dict[str, torch.Tensor], weight_dict: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """Multiply each loss by its weight in ``weight_dict`` (keys without a weight pass unchanged)."""
    return {k: v * weight_dict[k] if k in weight_dict else v for k, v in loss_dict.items()}
