"""Gaussian keypoint targets of CornerNet / CenterNet ("Objects as Points"), vectorised in torch.

* :func:`gaussian_radius`: the radius ``r`` such that a box whose corners move by up to ``r``
  (output-map pixels) still has IoU >= ``min_overlap`` with the GT, in both variants found in the
  authors' code (princeton-vl/CornerNet ``sample/utils.py`` at its first commit 0017821e and
  after the fix 3e71377b; xingyizhou/CenterNet at 4c50fd3a ``src/lib/utils/image.py``):

  - ``"cornernet_bug"``: the original formula of CornerNet's first commit, copied by CenterNet
    (``xingyizhou/CenterNet src/lib/utils/image.py``); its first two roots are always large, so
    the result is ``(b3 + sqrt(b3^2 - 4 a3 c3)) / 2`` = ``4 * min_overlap`` x the exact case-3
    radius. CenterNet uses it with ``min_overlap = 0.7``.
  - ``"cornernet_fixed"``: the corrected formula (CornerNet commit 3e71377b), used by CornerNet
    with ``min_overlap = 0.3``.

* :func:`draw_gaussian`: the "umich" Gaussian (sigma = (2r + 1) / 6, peak exactly 1 at the integer
  centre, values below ``eps * max`` zeroed, clipped at the borders), drawn for all objects at
  once with one ``scatter_reduce(amax)``, so overlapping Gaussians of one class keep the
  element-wise maximum (paper Sec. 3).
* :func:`build_centernet_targets`: heatmap, size, offset, index and mask targets of one image on
  the stride-R output grid (``src/lib/datasets/sample/ctdet.py`` of the CenterNet authors).
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch

__all__ = ["GAUSSIAN_RADIUS_VARIANTS", "gaussian_radius", "draw_gaussian", "build_centernet_targets"]

GAUSSIAN_RADIUS_VARIANTS = ("cornernet_bug", "cornernet_fixed")


def gaussian_radius(
    height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7, variant: str = "cornernet_bug"
) -> torch.Tensor:
    """Gaussian radius of boxes of size ``height x width`` (float, output-map pixels; not floored).

    Three quadratics ``a r^2 - b r + c = 0`` (corner shifted / both corners inside / both outside,
    as in princeton-vl/CornerNet ``sample/utils.py``) are solved and the minimum root taken.

    Args:
        height, width: ``(N,)`` (or broadcastable) box sizes in output-map pixels. The authors pass
            ``ceil(h), ceil(w)``; callers do that rounding.
        min_overlap: target IoU ``o`` in (0, 1).
        variant: ``"cornernet_bug"`` (CenterNet, CenterNet-Triplets, CornerNet before 3e71377b) or
            ``"cornernet_fixed"`` (CornerNet after the fix).

    Returns:
        ``(N,)`` float radii (the authors then take ``max(0, int(r))``).

    Raises:
        ValueError: unknown ``variant`` or ``min_overlap`` outside (0, 1).

    Example: ``(h, w) = (10, 10)`` gives 2.73 (bug, 0.7), 0.82 (fixed, 0.7), 2.26 (fixed, 0.3).
    """
    if variant not in GAUSSIAN_RADIUS_VARIANTS:
        raise ValueError(f"gaussian_radius variant must be one of {GAUSSIAN_RADIUS_VARIANTS}, got {variant!r}")
    if not 0.0 < min_overlap < 1.0:
        raise ValueError(f"gaussian_radius min_overlap must be in (0, 1), got {min_overlap}")
    h = torch.as_tensor(height, dtype=torch.float64)
    w = torch.as_tensor(width, dtype=torch.float64)
    o = float(min_overlap)

    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    sq1 = torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    sq2 = torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    sq3 = torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp(min=0))
    if variant == "cornernet_bug":
        r1 = (b1 + sq1) / 2
        r2 = (b2 + sq2) / 2
        r3 = (b3 + sq3) / 2
    else:
        r1 = (b1 - sq1) / 2
        r2 = (b2 - sq2) / (2 * 4)
        r3 = (b3 + sq3) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3).to(torch.float32)


def draw_gaussian(
    heatmap: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, classes: torch.Tensor,
    sigma_divisor: float = 6.0,
) -> torch.Tensor:
    """Draw one Gaussian per object into ``heatmap`` (in place) with an element-wise max.
    (``sigma_divisor``: ``sigma = (2 r + 1) / sigma_divisor``; 5 for CenterNet-Triplets' centres.)

    Kernel of object k: ``exp(-(dx^2 + dy^2) / (2 sigma_k^2))`` for integer ``|dx|, |dy| <= r_k``,
    ``sigma_k = (2 r_k + 1) / 6``; entries below ``float32 eps x 1`` are set to 0 (the authors'
    ``draw_umich_gaussian``); ``r_k = 0`` gives a single 1.0 pixel. All kernels are laid on a common
    ``(2 R + 1)^2`` window (``R = max r_k``), masked outside their own radius and the map, and merged
    with ``scatter_reduce(..., "amax")``: no loop over objects or pixels.

    Args:
        heatmap: ``(C, H, W)`` float tensor, modified in place.
        centers: ``(N, 2)`` integer ``(x, y)`` centres in map pixels (may lie outside the map; only
            the visible part is drawn).
        radii: ``(N,)`` non-negative integer radii.
        classes: ``(N,)`` int64 channel of each object, in ``[0, C)``.

    Returns:
        ``heatmap`` (the same tensor).

    Raises:
        ValueError: shapes disagree, a negative radius, or a class outside ``[0, C)``.

    Source: [XZ] ``src/lib/utils/image.py`` ``draw_umich_gaussian``; paper Sec. 3 (element-wise max).
    """
    if heatmap.dim() != 3:
        raise ValueError(f"draw_gaussian: heatmap must be (C, H, W), got {tuple(heatmap.shape)}")
    n = centers.shape[0]
    if centers.shape != (n, 2) or radii.shape != (n,) or classes.shape != (n,):
        raise ValueError(
            f"draw_gaussian: centers (N, 2), radii (N,), classes (N,) expected, got "
            f"{tuple(centers.shape)}, {tuple(radii.shape)}, {tuple(classes.shape)}"
        )
    if n == 0:
        return heatmap
    C, H, W = heatmap.shape
    radii = radii.to(device=heatmap.device, dtype=torch.long)
    classes = classes.to(device=heatmap.device, dtype=torch.long)
    centers = centers.to(device=heatmap.device, dtype=torch.long)
    if int(radii.min()) < 0:
        raise ValueError(f"draw_gaussian: radii must be >= 0, got min {int(radii.min())}")
    if int(classes.min()) < 0 or int(classes.max()) >= C:
        raise ValueError(f"draw_gaussian: classes must be in [0, {C}), got {sorted(set(classes.tolist()))}")

    R = int(radii.max())
    d = torch.arange(-R, R + 1, device=heatmap.device)
    dy, dx = d.view(-1, 1), d.view(1, -1)  # (K, 1), (1, K)
    sigma = (2 * radii + 1).to(heatmap.dtype) / float(sigma_divisor)  # (N,)
    sq = (dx ** 2 + dy ** 2).to(heatmap.dtype)  # (K, K)
    kernel = torch.exp(-sq.unsqueeze(0) / (2 * sigma.view(-1, 1, 1) ** 2))  # (N, K, K)
    kernel = torch.where(kernel < torch.finfo(torch.float32).eps, torch.zeros_like(kernel), kernel)

    xs = centers[:, 0].view(-1, 1, 1) + dx  # (N, 1, K) -> broadcast (N, K, K)
    ys = centers[:, 1].view(-1, 1, 1) + dy
    r = radii.view(-1, 1, 1)
    valid = (dx.abs() <= r) & (dy.abs() <= r) & (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    flat = classes.view(-1, 1, 1) * (H * W) + ys.clamp(0, H - 1) * W + xs.clamp(0, W - 1)
    flat_heat = heatmap.view(-1)
    flat_heat.scatter_reduce_(0, flat[valid], kernel[valid], reduce="amax", include_self=True)
    return heatmap


def build_centernet_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    output_size: Tuple[int, int],
    stride: Union[int, float] = 4,
    min_overlap: float = 0.7,
    variant: str = "cornernet_bug",
) -> Dict[str, torch.Tensor]:
    """CenterNet training targets of one image on the stride-``stride`` output grid.

    Boxes are divided by ``stride``, clipped to ``[0, W_out - 1] x [0, H_out - 1]``; objects with a
    non-positive clipped side are dropped. For the others (paper Sec. 3, [XZ] ``ctdet.py``):
    ``radius = max(0, int(gaussian_radius(ceil(h), ceil(w))))``; centre ``ct`` (float) and
    ``ct_int = floor(ct)``; a Gaussian at ``ct_int`` on channel ``class``; ``wh = (w, h)`` and
    ``reg = ct - ct_int``; ``ind = ct_int.y * W_out + ct_int.x``.

    Args:
        boxes: ``(N, 4)`` XYXY_ABS boxes in input-image pixels.
        classes: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: heatmap channels C.
        output_size: ``(H_out, W_out)`` of the output map.
        stride: input pixels per output pixel (``R`` = 4 in the paper).
        min_overlap, variant: see :func:`gaussian_radius`.

    Returns:
        dict with ``heatmap`` ``(C, H_out, W_out)`` float32 in [0, 1]; ``wh`` ``(M, 2)`` (w, h) in
        output pixels; ``offset`` ``(M, 2)`` (dx, dy) in [0, 1); ``index`` ``(M,)`` int64 flat
        index into ``H_out * W_out``; ``classes`` ``(M,)`` int64; ``M <= N`` kept objects.

    Raises:
        ValueError: shape mismatch or class ids outside ``[0, num_classes)``.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or classes.shape != boxes.shape[:1]:
        raise ValueError(
            f"build_centernet_targets: boxes (N, 4) and classes (N,) expected, got "
            f"{tuple(boxes.shape)} and {tuple(classes.shape)}"
        )
    H, W = int(output_size[0]), int(output_size[1])
    device = boxes.device
    classes = classes.to(torch.long)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"GT class ids {sorted(set(classes.tolist()))} outside [0, {num_classes}): "
            "MODEL.CENTERNET.NUM_CLASSES does not match the dataset"
        )
    b = boxes.to(torch.float32) / float(stride)
    b = torch.stack([b[:, 0].clamp(0, W - 1), b[:, 1].clamp(0, H - 1),
                     b[:, 2].clamp(0, W - 1), b[:, 3].clamp(0, H - 1)], dim=1)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    keep = (w > 0) & (h > 0)
    b, w, h, classes = b[keep], w[keep], h[keep], classes[keep]

    heatmap = torch.zeros((num_classes, H, W), dtype=torch.float32, device=device)
    radius = gaussian_radius(torch.ceil(h), torch.ceil(w), min_overlap, variant).floor().clamp(min=0).long()
    ct = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], dim=1)
    ct_int = ct.floor().long()
    draw_gaussian(heatmap, ct_int, radius.to(device), classes)
    return {
        "heatmap": heatmap,
        "wh": torch.stack([w, h], dim=1),
        "offset": ct - ct_int.to(ct.dtype),
        "index": ct_int[:, 1] * W + ct_int[:, 0],
        "classes": classes,
    }
