"""CornerNet / CenterNet-Triplets training targets of one image, vectorised over its objects.

Sources: princeton-vl/CornerNet ``sample/coco.py`` ``kp_detection`` (CornerNet-Lite
``core/sample/cornernet.py``); Duankaiwen/CenterNet ``sample/coco.py`` (centre keypoints).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from common.assigners.gaussian import draw_gaussian, gaussian_radius

__all__ = ["build_corner_targets"]


def build_corner_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
    min_overlap: float = 0.3,
    variant: str = "cornernet_fixed",
    with_center: bool = False,
    center_sigma_divisor: float = 5.0,
) -> Dict[str, torch.Tensor]:
    """Corner (and centre) heatmaps, offsets and cell indices of one image.

    As the authors: boxes are clipped to ``[0, W_in - 1] x [0, H_in - 1]`` and boxes with a
    non-positive side dropped (``_clip_detections``); coordinates are scaled by the ratio
    ``output / input`` per axis (128/511 for CornerNet, not 1/4); a corner's cell is ``int(x * r)``
    and its offset the fraction; the radius ``max(0, int(gaussian_radius(ceil(h r), ceil(w r))))``
    is shared by both corners (and the centre); the centre ``((x1 + x2) / 2, (y1 + y2) / 2) * r``
    gets a Gaussian of ``sigma = d / center_sigma_divisor`` (Triplets' ``delte = 5``).

    Args:
        boxes: ``(N, 4)`` XYXY_ABS boxes in input-image pixels.
        classes: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: heatmap channels C.
        input_size, output_size: ``(H, W)`` of the network input and of its output maps.
        min_overlap, variant: :func:`~common.assigners.gaussian.gaussian_radius`.
        with_center: also build the centre targets (CenterNet-Triplets).

    Returns:
        ``tl_heatmap``, ``br_heatmap`` (and ``ct_heatmap``) ``(C, Ho, Wo)``; ``tl_offset``,
        ``br_offset`` (``ct_offset``) ``(M, 2)`` (dx, dy) in [0, 1); ``tl_index``, ``br_index``
        (``ct_index``) ``(M,)`` int64 flat ``y * Wo + x``; ``classes`` ``(M,)``; M <= N objects kept.

    Raises:
        ValueError: shape mismatch or class ids outside ``[0, num_classes)``.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:1]:
        raise ValueError(f"build_corner_targets: boxes (N, 4) and classes (N,) expected, got "
                         f"{tuple(boxes.shape)} and {tuple(classes.shape)}")
    classes = classes.to(torch.long)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(f"GT class ids {sorted(set(classes.tolist()))} outside [0, {num_classes}): "
                         "MODEL.CORNERNET.NUM_CLASSES does not match the dataset")
    in_h, in_w = int(input_size[0]), int(input_size[1])
    H, W = int(output_size[0]), int(output_size[1])
    device = boxes.device
    b = boxes.to(torch.float32)
    b = torch.stack([b[:, 0].clamp(0, in_w - 1), b[:, 1].clamp(0, in_h - 1),
                     b[:, 2].clamp(0, in_w - 1), b[:, 3].clamp(0, in_h - 1)], dim=1)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, classes = b[keep], classes[keep]
    ratio = b.new_tensor([W / in_w, H / in_h, W / in_w, H / in_h])
    f = b * ratio  # (M, 4) output-map coordinates
    cells = f.floor().long().clamp(min=0)
    cells = torch.minimum(cells, cells.new_tensor([W - 1, H - 1, W - 1, H - 1]))
    radius = gaussian_radius(torch.ceil(f[:, 3] - f[:, 1]), torch.ceil(f[:, 2] - f[:, 0]), min_overlap, variant)
    radius = radius.floor().clamp(min=0).long().to(device)

    out: Dict[str, torch.Tensor] = {"classes": classes}
    for name, xy, cxy in (("tl", f[:, :2], cells[:, :2]), ("br", f[:, 2:], cells[:, 2:])):
        heat = torch.zeros((num_classes, H, W), dtype=torch.float32, device=device)
        draw_gaussian(heat, cxy, radius, classes)
        out[f"{name}_heatmap"] = heat
        out[f"{name}_offset"] = xy - cxy.to(xy.dtype)
        out[f"{name}_index"] = cxy[:, 1] * W + cxy[:, 0]
    if with_center:
        ct = torch.stack([(f[:, 0] + f[:, 2]) / 2, (f[:, 1] + f[:, 3]) / 2], dim=1)
        ct_cell = ct.floor().long()
        heat = torch.zeros((num_classes, H, W), dtype=torch.float32, device=device)
        draw_gaussian(heat, ct_cell, radius, classes, sigma_divisor=center_sigma_divisor)
        out["ct_heatmap"] = heat
        out["ct_offset"] = ct - ct_cell.to(ct.dtype)
        out["ct_index"] = ct_cell[:, 1] * W + ct_cell[:, 0]
    return out
