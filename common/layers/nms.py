"""Class-aware NMS (detectron2 ``layers/nms.py``), delegating to torchvision."""
import torch
from torchvision.ops import boxes as box_ops

__all__ = ["batched_nms"]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression done independently per category.

    Args:
        boxes: ``(N, 4)`` XYXY_ABS.
        scores: ``(N,)``.
        idxs: ``(N,)`` int64 category of each box; boxes of different categories never suppress each other.
        iou_threshold: discard boxes with IoU > this against a higher-scored kept box.

    Returns:
        int64 indices of kept boxes, sorted by decreasing score.

    Raises:
        ValueError: when boxes are not ``(N, 4)``.

    Source: ``detectron2/layers/nms.py``; computed by ``torchvision.ops.batched_nms`` (boxes cast to
    float32 as detectron2 does, so fp16 boxes work).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_nms expects (N, 4) boxes, got {tuple(boxes.shape)}")
    return box_ops.batched_nms(boxes.float(), scores, idxs, iou_threshold)
