"""FCOS training targets (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection",
ICCV 2019, Sec. 3.1-3.3), batched over images, locations and GTs.

Behaviour of AdelaiDet ``adet/modeling/fcos/fcos_outputs.py`` (``_get_ground_truth``,
``compute_targets_for_locations``, ``get_sample_region``) and the official FCOS
``fcos_core/modeling/rpn/fcos/loss.py``:

* ``(l, t, r, b)`` from each location to each GT;
* inside test: ``min(l, t, r, b) > 0``, or with centre sampling (radius ``R``, 1.5 in FCOS-imprv /
  AdelaiDet) the location must lie strictly inside ``cx +- R*stride, cy +- R*stride`` clipped to the GT;
* scale assignment: ``lo <= max(l, t, r, b) <= hi`` for the level's size range (both inclusive);
* ambiguity: among the GTs that pass both tests the one of minimal area wins (the first on a tie);
* regression targets divided by the level stride when ``norm_by_stride`` (AdelaiDet always,
  official FCOS with ``NORM_REG_TARGETS``);
* centerness target ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

__all__ = ["FCOS_INF", "centerness_targets", "fcos_size_ranges", "fcos_targets"]

# AdelaiDet / official FCOS use INF = 100000000 for the last size range and for "no GT".
FCOS_INF = 100000000.0


def fcos_size_ranges(sizes_of_interest: Sequence[float]) -> List[Tuple[float, float]]:
    """AdelaiDet ``SIZES_OF_INTEREST`` ``[64, 128, 256, 512]`` -> ``[(-1, 64), (64, 128), (128, 256),
    (256, 512), (512, INF)]`` (one range per level)."""
    ranges, prev = [], -1.0
    for s in sizes_of_interest:
        ranges.append((prev, float(s)))
        prev = float(s)
    ranges.append((prev, FCOS_INF))
    return ranges


def centerness_targets(reg_targets: torch.Tensor) -> torch.Tensor:
    """FCOS Eq. 3: ``(N, 4)`` positive ``(l, t, r, b)`` -> ``(N,)`` centerness in (0, 1] (float32;
    scale-free, so pixel or stride units give the same value)."""
    if reg_targets.numel() == 0:
        return reg_targets.new_zeros(reg_targets.shape[:-1], dtype=torch.float32)
    reg_targets = reg_targets.float()
    lr = reg_targets[..., [0, 2]]
    tb = reg_targets[..., [1, 3]]
    ctr = (lr.min(dim=-1).values / lr.max(dim=-1).values) * (tb.min(dim=-1).values / tb.max(dim=-1).values)
    return torch.sqrt(ctr)


@torch.no_grad()
def fcos_targets(
    locations: Sequence[torch.Tensor],
    strides: Sequence[int],
    size_ranges: Sequence[Tuple[float, float]],
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_valid: torch.Tensor,
    num_classes: int,
    center_sampling_radius: float = 1.5,
    norm_by_stride: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS labels and regression targets of every location of every image.

    Args:
        locations: per level ``(R_l, 2)`` ``(x, y)`` in input pixels
            (``common.modeling.dense_head.compute_locations``).
        strides: per level stride (pixels).
        size_ranges: per level ``(lo, hi)`` bound of ``max(l, t, r, b)`` in pixels
            (:func:`fcos_size_ranges`).
        gt_boxes: ``(B, M, 4)`` XYXY_ABS, padded; gt_classes ``(B, M)`` int64; gt_valid ``(B, M)`` bool.
        num_classes: K; negatives get label K.
        center_sampling_radius: ``R`` in strides; ``<= 0`` disables centre sampling (original FCOS).
        norm_by_stride: divide the regression targets by the level stride.

    Returns:
        ``labels (B, R)`` int64 in ``[0, K]``, ``reg_targets (B, R, 4)`` float32 ``(l, t, r, b)``
        to the assigned GT (meaningful for positives only), ``matched_gt (B, R)`` int64 index of the
        assigned GT (-1 for negatives); ``R = sum R_l``, levels in order.

    Raises:
        ValueError: per-level lists of different lengths.
    """
    if not (len(locations) == len(strides) == len(size_ranges)):
        raise ValueError(
            f"fcos_targets: {len(locations)} location levels, {len(strides)} strides and {len(size_ranges)} size ranges"
        )
    device = gt_boxes.device
    locs = torch.cat(list(locations)).float().to(device)  # (R, 2)
    per_level = [int(l.shape[0]) for l in locations]
    stride = torch.cat([torch.full((n,), float(s), device=device) for n, s in zip(per_level, strides)])
    lo = torch.cat([torch.full((n,), float(r[0]), device=device) for n, r in zip(per_level, size_ranges)])
    hi = torch.cat([torch.full((n,), float(r[1]), device=device) for n, r in zip(per_level, size_ranges)])
    b, m = gt_valid.shape
    num_locs = locs.shape[0]
    if m == 0:
        labels = torch.full((b, num_locs), num_classes, dtype=torch.int64, device=device)
        return labels, torch.zeros(b, num_locs, 4, device=device), torch.full_like(labels, -1)

    g = gt_boxes.float()[:, None, :, :]  # (B, 1, M, 4)
    xs = locs[None, :, None, 0]  # (1, R, 1)
    ys = locs[None, :, None, 1]
    ltrb = torch.stack((xs - g[..., 0], ys - g[..., 1], g[..., 2] - xs, g[..., 3] - ys), dim=-1)  # (B, R, M, 4)

    if center_sampling_radius > 0:
        cx = (g[..., 0] + g[..., 2]) / 2.0
        cy = (g[..., 1] + g[..., 3]) / 2.0
        radius = (stride * center_sampling_radius)[None, :, None]
        x0 = torch.max(cx - radius, g[..., 0])
        y0 = torch.max(cy - radius, g[..., 1])
        x1 = torch.min(cx + radius, g[..., 2])
        y1 = torch.min(cy + radius, g[..., 3])
        inside = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=-1).min(dim=-1).values > 0
    else:
        inside = ltrb.min(dim=-1).values > 0

    max_reg = ltrb.max(dim=-1).values  # (B, R, M)
    cared = (max_reg >= lo[None, :, None]) & (max_reg <= hi[None, :, None])
    area = ((g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])).expand(b, num_locs, m)
    ok = inside & cared & gt_valid[:, None, :]
    area = torch.where(ok, area, torch.full_like(area, FCOS_INF))
    min_area, matched = area.min(dim=2)  # (B, R)
    positive = min_area < FCOS_INF
    labels = gt_classes.gather(1, matched)
    labels = torch.where(positive, labels, torch.full_like(labels, num_classes))
    reg = ltrb.gather(2, matched[:, :, None, None].expand(b, num_locs, 1, 4)).squeeze(2)
    if norm_by_stride:
        reg = reg / stride[None, :, None]
    matched = torch.where(positive, matched, torch.full_like(matched, -1))
    return labels, reg, matched
