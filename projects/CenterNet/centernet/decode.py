"""CenterNet decoding: peak extraction, top-K, boxes.

Sources: paper Sec. 4 "From points to bounding boxes"; [XZ] ``src/lib/models/decode.py``
(``_nms``, ``_topk``, ``ctdet_decode``). The multi-scale merge (``merge_outputs`` of [XZ]
``src/lib/detectors/ctdet.py``) uses :func:`common.ops.soft_nms` (re-exported here).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from common.ops import soft_nms

__all__ = ["heatmap_peaks", "centernet_decode", "soft_nms"]


def heatmap_peaks(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep only local maxima: ``heat * (maxpool_kxk(heat) == heat)`` (same shape ``(B, C, H, W)``)."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).to(heat.dtype)


def centernet_decode(
    heat: torch.Tensor, wh: torch.Tensor, reg: Optional[torch.Tensor], k: int = 100
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` detections per image over all classes and positions.

    Args:
        heat: ``(B, C, H, W)`` heatmap probabilities (after sigmoid).
        wh: ``(B, 2, H, W)`` (w, h) in output-map pixels.
        reg: ``(B, 2, H, W)`` centre offsets (dx, dy), or None (then +0.5).
        k: detections per image (``min(k, C * H * W)`` are returned).

    Returns:
        boxes ``(B, k, 4)`` XYXY in output-map pixels
        (``x + dx -/+ w / 2``, ``y + dy -/+ h / 2``), scores ``(B, k)`` descending, classes ``(B, k)`` int64.
    """
    B, C, H, W = heat.shape
    k = min(int(k), C * H * W)
    scores, idx = heatmap_peaks(heat).flatten(1).topk(k, dim=1)
    classes = torch.div(idx, H * W, rounding_mode="floor")
    pix = idx % (H * W)
    ys = torch.div(pix, W, rounding_mode="floor").to(heat.dtype)
    xs = (pix % W).to(heat.dtype)
    gather = pix.unsqueeze(1).expand(-1, 2, -1)  # (B, 2, k)
    size = wh.flatten(2).gather(2, gather)  # (B, 2, k)
    if reg is not None:
        off = reg.flatten(2).gather(2, gather)
        xs, ys = xs + off[:, 0], ys + off[:, 1]
    else:
        xs, ys = xs + 0.5, ys + 0.5
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    boxes = torch.stack([xs - half_w, ys - half_h, xs + half_w, ys + half_h], dim=2)
    return boxes, scores, classes
