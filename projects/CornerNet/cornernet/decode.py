"""Decoding of CornerNet and CenterNet-Triplets as pure tensor functions (batched, no loops).

Sources: princeton-vl/CornerNet ``models/py_utils/kp_utils.py`` ``_decode`` (CornerNet-Lite
``core/models/py_utils/utils.py`` ``_decode``); Duankaiwen/CenterNet ``models/py_utils/kp_utils.py``
``_decode`` (centre keypoints) and ``test/coco.py`` (central-region rescoring).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["heatmap_peaks", "topk_keypoints", "cornernet_decode", "central_region_rescore"]


def heatmap_peaks(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """``heat * (maxpool_kxk(heat) == heat)``: only local maxima survive; ``(B, C, H, W)`` -> same."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).to(heat.dtype)


def topk_keypoints(heat: torch.Tensor, k: int, offset: torch.Tensor = None) -> Dict[str, torch.Tensor]:
    """Top-``k`` over all classes and positions of a peak map (the authors' ``_topk``).

    Args:
        heat: ``(B, C, H, W)`` (already peak-filtered) probabilities.
        k: keypoints per image (``min(k, C H W)``).
        offset: ``(B, 2, H, W)`` (dx, dy) sub-pixel offsets added to the cell, or None.

    Returns:
        ``scores``, ``classes`` (int64), ``index`` (flat ``y W + x``, int64), ``xs``, ``ys``
        (output-map pixels, offsets added): each ``(B, k)``.
    """
    B, C, H, W = heat.shape
    k = min(int(k), C * H * W)
    scores, idx = heat.flatten(1).topk(k, dim=1)
    classes = torch.div(idx, H * W, rounding_mode="floor")
    pix = idx % (H * W)
    ys = torch.div(pix, W, rounding_mode="floor").to(heat.dtype)
    xs = (pix % W).to(heat.dtype)
    if offset is not None:
        off = offset.flatten(2).gather(2, pix.unsqueeze(1).expand(-1, 2, -1))
        xs, ys = xs + off[:, 0], ys + off[:, 1]
    return {"scores": scores, "classes": classes, "index": pix, "xs": xs, "ys": ys}


def cornernet_decode(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_off: torch.Tensor,
    br_off: torch.Tensor,
    k: int = 100,
    ae_threshold: float = 0.5,
    kernel: int = 3,
    num_dets: int = 1000,
    no_border: bool = False,
) -> Dict[str, torch.Tensor]:
    """Pair corners into boxes (CornerNet Sec. 4.1; the authors' ``_decode``).

    3x3 max-pool peaks; top-``k`` corners of each type over classes and positions (offsets
    added); all ``k x k`` (tl, br) pairs; a pair's score is ``(s_tl + s_br) / 2``, set to -1 when
    the classes differ, ``|e_tl - e_br| > ae_threshold``, ``x_br < x_tl`` or ``y_br < y_tl``;
    the top ``num_dets`` pairs are returned (invalid ones included, with score -1). With
    ``no_border`` (CornerNet-Saccade's crops, [CNL] ``_decode(no_border=True)``) pairs whose
    top-left corner lies in the first row or column of the map, or whose bottom-right corner in
    the last, also get -1: such a box is likely cut by the crop border.

    Args:
        tl_heat, br_heat: ``(B, C, H, W)`` heatmap probabilities (after sigmoid).
        tl_tag, br_tag: ``(B, 1, H, W)`` embeddings.
        tl_off, br_off: ``(B, 2, H, W)`` offsets.

    Returns:
        ``boxes`` ``(B, D, 4)`` XYXY in output-map pixels, ``scores``, ``tl_scores``,
        ``br_scores`` ``(B, D)`` and ``classes`` ``(B, D)`` int64, with ``D = min(num_dets, k^2)``,
        scores descending.
    """
    tl = topk_keypoints(heatmap_peaks(tl_heat, kernel), k, tl_off)
    br = topk_keypoints(heatmap_peaks(br_heat, kernel), k, br_off)
    B, K = tl["scores"].shape
    e_tl = tl_tag.flatten(2)[:, 0].gather(1, tl["index"])  # (B, K)
    e_br = br_tag.flatten(2)[:, 0].gather(1, br["index"])
    x1, y1 = tl["xs"][:, :, None].expand(B, K, K), tl["ys"][:, :, None].expand(B, K, K)
    x2, y2 = br["xs"][:, None, :].expand(B, K, K), br["ys"][:, None, :].expand(B, K, K)
    s_tl = tl["scores"][:, :, None].expand(B, K, K)
    s_br = br["scores"][:, None, :].expand(B, K, K)
    scores = (s_tl + s_br) / 2
    invalid = (tl["classes"][:, :, None] != br["classes"][:, None, :])
    invalid |= (e_tl[:, :, None] - e_br[:, None, :]).abs() > ae_threshold
    invalid |= (x2 < x1) | (y2 < y1)
    if no_border:
        H, W = tl_heat.shape[-2:]
        tl_edge = (tl["index"] % W == 0) | (tl["index"] < W)  # x == 0 or y == 0 (cells, before offsets)
        br_edge = (br["index"] % W == W - 1) | (br["index"] >= (H - 1) * W)
        invalid |= tl_edge[:, :, None] | br_edge[:, None, :]
    scores = torch.where(invalid, scores.new_full((), -1.0), scores)
    d = min(int(num_dets), K * K)
    scores, order = scores.reshape(B, -1).topk(d, dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=3).reshape(B, -1, 4)
    boxes = boxes.gather(1, order[:, :, None].expand(-1, -1, 4))
    classes = tl["classes"][:, :, None].expand(B, K, K).reshape(B, -1).gather(1, order)
    return {
        "boxes": boxes,
        "scores": scores,
        "tl_scores": s_tl.reshape(B, -1).gather(1, order),
        "br_scores": s_br.reshape(B, -1).gather(1, order),
        "classes": classes,
    }


def central_region_rescore(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    centers: torch.Tensor,
    center_scores: torch.Tensor,
    center_classes: torch.Tensor,
    area_threshold: float = 22500.0,
    region_n: Sequence[int] = (3, 5),
) -> torch.Tensor:
    """CenterNet-Triplets' central-region test (paper Sec. 3.3 and Eq. 1; [DK] ``test/coco.py``).

    The central region of a box is, for ``n`` = ``region_n[0]`` (3) when its area is at most
    ``area_threshold`` (150 x 150 px) else ``region_n[1]`` (5):
    ``x in ((n+1) x1 + (n-1) x2) / 2n .. ((n-1) x1 + (n+1) x2) / 2n`` and the same in y. A box
    keeps a score only if a centre keypoint of its class lies strictly inside the region; its
    score becomes ``(2 s_pair + s_ct) / 3 = (s_tl + s_br + s_ct) / 3`` with the first such
    centre in list order; other boxes (and boxes whose score is already negative) get -1.

    Args:
        boxes: ``(B, N, 4)`` XYXY (the same pixel frame as ``centers``; original-image pixels).
        scores: ``(B, N)`` pair scores (``(s_tl + s_br) / 2``; negative = invalid).
        classes: ``(B, N)`` int64.
        centers: ``(B, M, 2)`` centre keypoints (x, y).
        center_scores: ``(B, M)``; center_classes: ``(B, M)`` int64.

    Returns:
        ``(B, N)`` new scores.

    Raises:
        ValueError: ``region_n`` not two odd integers >= 3 or inconsistent shapes.
    """
    if len(region_n) != 2 or any(int(n) < 3 or int(n) % 2 == 0 for n in region_n):
        raise ValueError(f"MODEL.CORNERNET.CENTER_REGION_N must be two odd integers >= 3, got {list(region_n)}")
    if boxes.shape[:2] != scores.shape or scores.shape != classes.shape or centers.shape[:2] != center_scores.shape \
            or center_scores.shape != center_classes.shape or boxes.shape[0] != centers.shape[0]:
        raise ValueError("central_region_rescore: inconsistent shapes "
                         f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(classes.shape)}, "
                         f"{tuple(centers.shape)}, {tuple(center_scores.shape)}, {tuple(center_classes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(-1)  # (B, N)
    area = (x2 - x1) * (y2 - y1)
    n = torch.where(area <= area_threshold, float(region_n[0]), float(region_n[1])).to(boxes.dtype)
    left, right = ((n + 1) * x1 + (n - 1) * x2) / (2 * n), ((n - 1) * x1 + (n + 1) * x2) / (2 * n)
    top, bottom = ((n + 1) * y1 + (n - 1) * y2) / (2 * n), ((n - 1) * y1 + (n + 1) * y2) / (2 * n)
    cx, cy = centers[..., 0][:, None, :], centers[..., 1][:, None, :]  # (B, 1, M)
    inside = (cx > left[..., None]) & (cx < right[..., None]) & (cy > top[..., None]) & (cy < bottom[..., None])
    inside &= center_classes[:, None, :] == classes[..., None]  # (B, N, M)
    matched = inside.any(-1)
    first = inside.to(torch.uint8).argmax(-1)  # first True in centre order
    s_ct = center_scores.gather(1, first)
    new = (2 * scores + s_ct) / 3
    return torch.where(matched & (scores > -1), new, scores.new_full((), -1.0))
