"""CornerNet-Saccade building blocks as pure tensor functions (batched, no loops over objects).

CornerNet-Lite (Law, Teng, Russakovsky, Deng 2019) Sec. 3: attention maps predict where objects
are on a downsized image; the detector then runs on a few zoomed crops around them. The
functions follow princeton-vl/CornerNet-Lite: ``core/sample/cornernet_saccade.py``
(``create_attention_mask``) for the targets and ``core/test/cornernet_saccade.py``
(``crop_image_gpu``, ``decode_atts``, ``get_ref_locs``, ``location_nms``, ``remap_dets_``) for
inference.

A *location* is a row ``(y, x, scale, score)``: the crop centre in original-image pixels, the
zoom of the crop (crop input pixels per original pixel) and its priority.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

__all__ = [
    "attention_targets",
    "crop_and_resize",
    "attention_locations",
    "reference_locations",
    "location_nms",
    "remap_boxes",
]


def attention_targets(
    boxes: torch.Tensor,
    map_sizes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
    ranges: Sequence[Tuple[float, float]],
) -> List[torch.Tensor]:
    """Binary attention maps of one training image ([CNL] ``create_attention_mask``).

    Object k is marked on map j when ``lo_j <= max(w_k, h_k) <= hi_j`` (both inclusive: an object
    of max side exactly 32 or 96 marks two maps), with a single 1 at
    ``(int(cy_k / stride_j), int(cx_k / stride_j))`` (its centre; truncation as the authors').

    Args:
        boxes: ``(N, 4)`` XYXY_ABS boxes in input-image pixels (every object of the crop, the
            ignored ones included).
        map_sizes: ``(h_j, w_j)`` of each attention map.
        strides: input pixels per map cell of each map (16, 8, 4 for the authors' 255 input).
        ranges: ``(lo_j, hi_j)`` max-side range of each map (``MODEL.CORNERNET.SACCADE.ATT_RANGES``).

    Returns:
        one ``(1, h_j, w_j)`` float32 map per entry of ``map_sizes``.

    Raises:
        ValueError: the three sequences differ in length, or ``boxes`` is not ``(N, 4)``.
    """
    if not (len(map_sizes) == len(strides) == len(ranges)):
        raise ValueError(f"attention_targets: {len(map_sizes)} maps, {len(strides)} strides and {len(ranges)} "
                         "ranges (MODEL.CORNERNET.SACCADE.ATT_LEVELS / ATT_RANGES must have the same length)")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"attention_targets: boxes must be (N, 4), got {tuple(boxes.shape)}")
    b = boxes.float()
    max_side = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    out = []
    for (h, w), stride, (lo, hi) in zip(map_sizes, strides, ranges):
        att = torch.zeros((1, int(h), int(w)), dtype=torch.float32, device=boxes.device)
        sel = (max_side >= lo) & (max_side <= hi)
        xs = torch.trunc(cx[sel] / stride).long().clamp(0, int(w) - 1)
        ys = torch.trunc(cy[sel] / stride).long().clamp(0, int(h) - 1)
        att[0, ys, xs] = 1.0
        out.append(att)
    return out


def _bilinear_axis(out_len: int, start: torch.Tensor, stop: torch.Tensor, src_len: torch.Tensor):
    """Per crop, the source index pair and weights of every output position along one axis, as
    ``F.interpolate(mode="bilinear", align_corners=False)`` resizing ``src_len`` to
    ``stop - start`` samples placed at ``[start, stop)``: ``(i0, i1, w0, w1, inside)``, each
    ``(n, out_len)`` (indices relative to the source window)."""
    pos = torch.arange(out_len, device=start.device)[None, :]
    size = (stop - start).clamp(min=1)[:, None]
    scale = (src_len[:, None].to(torch.float32) / size.to(torch.float32))  # float32 as the kernel
    src = ((pos - start[:, None]).to(torch.float32) + 0.5) * scale - 0.5
    src = src.clamp(min=0)
    i0 = src.floor().long()
    i0 = torch.minimum(i0, (src_len[:, None] - 1).clamp(min=0))
    i1 = torch.minimum(i0 + 1, (src_len[:, None] - 1).clamp(min=0))
    w1 = src - i0.to(src.dtype)
    w1 = torch.where(i1 == i0, torch.zeros_like(w1), w1)
    inside = (pos >= start[:, None]) & (pos < stop[:, None])
    return i0, i1, 1 - w1, w1, inside


def crop_and_resize(
    image: torch.Tensor, locations: torch.Tensor, input_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zoomed crops of one image, all in one batch ([CNL] ``prepare_images`` / ``crop_image_gpu``).

    For location ``(y, x, s)``: centre ``(cy, cx) = (int(y), int(x))``, window
    ``(int(H_in / s), int(W_in / s))`` original pixels, cut to the image, resized bilinearly
    (``align_corners=False``) by ``H_in / max(window)`` and pasted around the canvas centre
    ``(H_in // 2, W_in // 2)`` of a zero canvas, as the authors (integer extents
    ``int(top * zoom)`` etc.).

    Args:
        image: ``(C, H, W)`` float image.
        locations: ``(n, >= 3)`` rows ``(y, x, scale, ...)``; ``y, x`` in original pixels.
        input_size: ``(H_in, W_in)`` of the crops (the network input, 255 x 255).

    Returns:
        ``crops (n, C, H_in, W_in)`` (0 outside the pasted window) and ``offsets (n, 2)`` float32
        ``(cy - window_h // 2, cx - window_w // 2)``: with :func:`remap_boxes`, crop-input pixel
        ``p`` maps back to ``p / s + offset``.

    Raises:
        ValueError: ``image`` not ``(C, H, W)`` or a non-positive scale.
    """
    if image.dim() != 3:
        raise ValueError(f"crop_and_resize: image must be (C, H, W), got {tuple(image.shape)}")
    in_h, in_w = int(input_size[0]), int(input_size[1])
    n = locations.shape[0]
    C, H, W = image.shape
    if n == 0:
        return image.new_zeros((0, C, in_h, in_w)), locations.new_zeros((0, 2), dtype=torch.float32)
    loc = locations.to(torch.float64)
    if bool((loc[:, 2] <= 0).any()):
        raise ValueError(f"crop_and_resize: crop scales must be positive, got {loc[:, 2].tolist()}")
    cy, cx = loc[:, 0].trunc().long(), loc[:, 1].trunc().long()
    crop_h, crop_w = (in_h / loc[:, 2]).trunc().long(), (in_w / loc[:, 2]).trunc().long()
    zoom = in_h / torch.maximum(crop_h, crop_w).clamp(min=1).to(torch.float64)
    x0, x1 = (cx - crop_w // 2).clamp(min=0), torch.minimum(cx + crop_w // 2, cx.new_tensor(W))
    y0, y1 = (cy - crop_h // 2).clamp(min=0), torch.minimum(cy + crop_h // 2, cy.new_tensor(H))
    left, right, top, bottom = cx - x0, x1 - cx, cy - y0, y1 - cy
    out_y0 = in_h // 2 - (top * zoom).trunc().long()
    out_y1 = in_h // 2 + (bottom * zoom).trunc().long()
    out_x0 = in_w // 2 - (left * zoom).trunc().long()
    out_x1 = in_w // 2 + (right * zoom).trunc().long()
    src_h, src_w = (y1 - y0).clamp(min=0), (x1 - x0).clamp(min=0)
    r0, r1, rw0, rw1, rin = _bilinear_axis(in_h, out_y0, out_y1, src_h)
    c0, c1, cw0, cw1, cin = _bilinear_axis(in_w, out_x0, out_x1, src_w)
    rin &= (src_h > 0)[:, None]
    cin &= (src_w > 0)[:, None]
    R0 = (y0[:, None] + r0).clamp(0, H - 1)
    R1 = (y0[:, None] + r1).clamp(0, H - 1)
    C0 = (x0[:, None] + c0).clamp(0, W - 1)
    C1 = (x0[:, None] + c1).clamp(0, W - 1)
    img = image.float()

    def g(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:  # (C, n, in_h, in_w)
        return img[:, rows[:, :, None], cols[:, None, :]]

    rw0, rw1 = rw0[:, :, None], rw1[:, :, None]
    cw0, cw1 = cw0[:, None, :], cw1[:, None, :]
    crops = rw0 * (cw0 * g(R0, C0) + cw1 * g(R0, C1)) + rw1 * (cw0 * g(R1, C0) + cw1 * g(R1, C1))
    crops = crops * (rin[:, :, None] & cin[:, None, :]).to(crops.dtype)
    offsets = torch.stack([cy - crop_h // 2, cx - crop_w // 2], 1).to(torch.float32)
    return crops.permute(1, 0, 2, 3).contiguous(), offsets


def remap_boxes(boxes: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Crop-input pixels -> original pixels ([CNL] ``remap_dets_``): ``x / s + offset_x``.

    Args:
        boxes: ``(n, D, 4)`` XYXY in crop-input pixels; scales ``(n,)``; offsets ``(n, 2)`` (y, x).

    Returns:
        ``(n, D, 4)`` XYXY_ABS original-image pixels (float32).
    """
    s = scales.to(torch.float32)[:, None, None]
    off = offsets.to(torch.float32)
    shift = torch.stack([off[:, 1], off[:, 0], off[:, 1], off[:, 0]], 1)[:, None, :]
    return boxes.float() / s + shift


def attention_locations(
    atts: Sequence[torch.Tensor],
    strides: Sequence[int],
    att_scales: Sequence[float],
    scales: torch.Tensor,
    offsets: torch.Tensor,
    image_size: Tuple[int, int],
    threshold: float,
    ignore_same: bool = False,
    max_source_scale: float = 2.0,
    max_crop_scale: float = 4.0,
) -> torch.Tensor:
    """Next crops from the attention maps of a batch of inputs ([CNL] ``decode_atts``).

    Every cell above ``threshold`` of map j of input i (maps already peak-filtered) becomes a
    location at ``cell * stride_j / scale_i + offset_i`` (original pixels; kept if inside the
    image) with scale ``att_scales[j] * scale_i`` and its attention score. Nothing is taken from
    an input zoomed more than ``max_source_scale``, from a map whose new scale exceeds
    ``max_crop_scale`` or, with ``ignore_same``, from maps with ``att_scales[j] <= 1`` (after the
    first round: the crop already shows those objects at that size).

    Args:
        atts: per map, ``(n, 1, h_j, w_j)`` probabilities.
        strides: input pixels per cell of each map; att_scales: zoom of each map.
        scales: ``(n,)`` zoom of each input; offsets: ``(n, 2)`` (y, x) of :func:`crop_and_resize`.
        image_size: ``(H, W)`` of the original image.

    Returns:
        ``(L, 4)`` float64 locations ``(y, x, scale, score)``, by input, then map, then row-major
        cell (the authors' order).
    """
    H, W = int(image_size[0]), int(image_size[1])
    parts, order = [], []
    for j, (att, stride, att_scale) in enumerate(zip(atts, strides, att_scales)):
        a = att[:, 0].float()
        idx = (a > threshold).nonzero()  # (k, 3): input, y, x in row-major order
        i = idx[:, 0]
        s = scales.to(torch.float64)[i]
        ys = idx[:, 1].to(torch.float64) * stride / s + offsets[i, 0].to(torch.float64)
        xs = idx[:, 2].to(torch.float64) * stride / s + offsets[i, 1].to(torch.float64)
        new_scale = float(att_scale) * s
        keep = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W) & (s <= max_source_scale) & (new_scale <= max_crop_scale)
        if ignore_same and float(att_scale) <= 1:
            keep &= False
        score = a[i, idx[:, 1], idx[:, 2]].to(torch.float64)
        parts.append(torch.stack([ys, xs, new_scale, score], 1)[keep])
        order.append(i[keep] * len(atts) + j)
    if not parts:
        return scales.new_zeros((0, 4), dtype=torch.float64)
    locs, key = torch.cat(parts), torch.cat(order)
    return locs[torch.sort(key, stable=True).indices]


def reference_locations(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float = 0.5,
    ref_sizes: Sequence[Tuple[float, float]] = ((96, 192), (32, 64), (0, 24)),
) -> torch.Tensor:
    """Crops around confident detections ([CNL] ``get_ref_locs``).

    Each detection with score above ``score_threshold`` gives a location at its box centre with
    the zoom that brings its max side ``m`` to ``t``: ``t / m`` for the first ``(lower, t)`` of
    ``ref_sizes`` with ``m > lower`` (the authors: > 96 -> 192, > 32 -> 64, else 24); its score
    is 1 so that these crops come before the attention ones.

    Args:
        boxes: ``(D, 4)`` XYXY_ABS original pixels; scores: ``(D,)``.

    Returns:
        ``(L, 4)`` float64 ``(y, x, scale, 1)``.
    """
    keep = scores > score_threshold
    b = boxes[keep].to(torch.float32)  # float32 like the authors' numpy detections; returned as float64
    max_side = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    target = torch.full_like(max_side, float(ref_sizes[-1][1]))
    for lower, t in reversed(list(ref_sizes[:-1])):  # a few size classes, not objects
        target = torch.where(max_side > lower, torch.full_like(max_side, float(t)), target)
    scale = target / max_side.clamp(min=1e-6)
    cy, cx = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
    return torch.stack([cy, cx, scale, torch.ones_like(scale)], 1).to(torch.float64)


def location_nms(
    locations: torch.Tensor, distance: float = 16.0, ratio_range: Tuple[float, float] = (0.8, 1.2)
) -> torch.Tensor:
    """Greedy suppression of near-duplicate crops ([CNL] ``location_nms``).

    Locations are sorted by score (descending, stable); a kept location ``i`` suppresses each later
    ``j`` with ``min(|y_i - y_j|, |x_i - x_j|) <= distance / s_i`` and ``lo <= s_i / s_j <= hi``.
    (The authors' distance is the *minimum* of the two axis distances; kept.) The greedy result
    is computed as the fixed point of ``keep_j = not any_i<j (keep_i and suppress_ij)``, which is
    reached in at most L vectorised steps (each fixes one more prefix element) and usually in a few.

    Args:
        locations: ``(L, 4)`` ``(y, x, scale, score)``.

    Returns:
        ``(L', 4)`` kept locations, score descending.
    """
    if locations.shape[0] == 0:
        return locations
    order = torch.sort(locations[:, 3], descending=True, stable=True).indices
    loc = locations[order]
    y, x, s = loc[:, 0], loc[:, 1], loc[:, 2]
    dist = torch.minimum((y[:, None] - y[None, :]).abs(), (x[:, None] - x[None, :]).abs())
    ratio = s[:, None] / s[None, :]
    suppress = (dist <= distance / s[:, None]) & (ratio >= ratio_range[0]) & (ratio <= ratio_range[1])
    suppress = torch.triu(suppress, diagonal=1)
    keep = torch.ones(loc.shape[0], dtype=torch.bool, device=loc.device)
    for _ in range(loc.shape[0]):
        new = ~(suppress & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return loc[keep]
