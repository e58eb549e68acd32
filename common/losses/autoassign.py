"""AutoAssign's differentiable label assignment and losses (Zhu et al., "AutoAssign: Differentiable
Label Assignment for Dense Object Detection", arXiv 2007.03496), as the authors' code computes
them (Megvii-BaseDetection/AutoAssign ``auto_assign.res50.fpn.coco.800size.1x/auto_assign.py``
``AutoAssign.losses``, on cvpods), batched over images, GTs and locations (no Python loop).

For GT ``i`` of class ``c_i`` and location ``j`` (all FPN levels concatenated):

* **centre prior** (paper Sec. 3.2 "Center Weighting", Eq. 2): ``G_ij = prod_{x,y} exp(-(d_ij - mu_c)^2
  / (2 sigma_c^2))`` with ``d_ij`` the offset of the location from the box centre **in units of the
  location's stride**; ``mu``, ``sigma`` ``(K, 2)`` are learnable (not normalised: no
  ``1/(sqrt(2 pi) sigma)``);
* **confidence** (Sec. 3.3, Eq. 3-8): ``C_ij = P_cls(j, c_i) * P_obj(j) * P_loc(i, j)`` with
  ``P_loc = exp(-lambda * L_GIoU)``, ``lambda = 5`` (``REG_WEIGHT``), and cvpods' GIoU (no +1);
* **positive weights** (Eq. 9-10, ``tau = 1/3``): ``w+_ij = exp(C_ij / tau) G_ij / sum_{j in box}
  exp(C_ij / tau) G_ij`` over the locations strictly inside box ``i``; the bag probability
  ``P+_i = sum_j w+_ij C_ij`` and ``L+_i = -log P+_i`` (torch BCE: ``log`` clamped at -100);
* **negative weights** (Eq. 11, no gradient): ``v_ij = 1 / (1 - IoU_j)`` with ``IoU_j`` the best IoU
  of location ``j``'s predicted box with any GT of the image, min-max normalised over the in-box
  locations of each GT (``(v - min + 1e-12) / (max - min + 1e-12)``), written at
  ``(j, c_i)`` of a ``(R, K)`` map that is 0 elsewhere; ``w-_jk = 1 - map_jk``;
* **negative loss** (code, not the paper's Eq. 12 ``-log(w- P-)``): ``p = P_cls * P_obj * w-`` inside a focal BCE,
  ``p^gamma * BCE(p, 0)``, ``gamma = 2``, summed over all locations and classes;
* **normalisers and weights** (code): ``loss_pos = alpha * sum_i L+_i / max(1, #GT)``,
  ``loss_neg = (1 - alpha) * sum L- / max(1, sum_{i, j in box} G_ij)`` (the "num_background" of
  the code, without gradient), ``loss_norm = (1 - alpha) * mean_images(#GT / sum_{i, j in box}
  G_ij)``, with ``alpha = 0.25`` (cvpods' ``FOCAL_LOSS_ALPHA`` reused as the balance); the two
  counts are averaged over processes as the code's ``all_reduce``.

Where the code is not batch-independent or degenerates, this module says what it does:

* a location inside several GTs of the same class gets the value of the **last** such GT in the
  image's annotation order (the code's sequential ``index_put`` on CPU; undefined on CUDA);
* ``L_loc`` is :func:`common.losses.iou_loss` (``smooth=False``) on ltrb distances. For pairs inside
  the box (positive targets, non-negative predictions) it equals cvpods' ``iou_loss(box_mode="ltrb")``
  for "giou" / "linear_iou"; cvpods also clamps the intersection at 0, which only matters outside
  the box, where the distances are negative and the pairs are masked out of the bag in both codes.
  Here ``L_loc`` is set to 0 there first (without cvpods' clamp a meaningless "IoU" of negative
  distances could overflow ``exp`` and turn ``0 * inf`` into NaN). For "iou" cvpods clamps the IoU
  at float32 eps before the log; this does not (only a zero-area prediction differs);
* an image whose GTs contain no location at all gives ``loss_norm`` term 0 (the code divides by
  ``1e-12``: a constant ``~1e12`` without gradient); an image without GTs gives 0, as in the code.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from common.modeling.box_regression import Box2BoxTransformLinear
from common.utils import comm

from .iou_loss import iou_loss

__all__ = [
    "autoassign_center_prior",
    "autoassign_losses",
    "autoassign_negative_box_prob",
    "autoassign_positive_weights",
    "autoassign_target_deltas",
    "negative_bag_loss",
    "positive_bag_loss",
]


def autoassign_target_deltas(locations: torch.Tensor, gt_boxes: torch.Tensor,
                             gt_valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distances of every location to the sides of every GT, and the in-box mask.

    Args:
        locations: ``(R, 2)`` ``(x, y)`` input pixels (AutoAssign: ``(j*s, i*s)``, offset 0).
        gt_boxes: ``(B, M, 4)`` XYXY_ABS pixels.
        gt_valid: ``(B, M)`` bool (False for padding).

    Returns:
        ``deltas (B, M, R, 4)`` float32 ``(x - x1, y - y1, x2 - x, y2 - y)`` pixels and
        ``in_box (B, M, R)`` bool: ``min(deltas) > 0`` (strictly inside) and the GT is valid.
        There are no scale ranges: every level's locations inside a box are candidates.
    """
    loc = locations.float()[None, None]  # (1, 1, R, 2)
    boxes = gt_boxes.float()[:, :, None]  # (B, M, 1, 4)
    deltas = torch.cat((loc - boxes[..., :2], boxes[..., 2:] - loc), dim=-1)
    in_box = (deltas.min(dim=-1).values > 0) & gt_valid[:, :, None]
    return deltas, in_box


def autoassign_center_prior(deltas: torch.Tensor, strides: torch.Tensor, gt_classes: torch.Tensor,
                            mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Category-wise Gaussian centre prior ``G_ij`` (paper Eq. 2; code ``normal_distribution``).

    Args:
        deltas: ``(B, M, R, 4)`` ``(l, t, r, b)`` of :func:`autoassign_target_deltas` (pixels).
        strides: ``(R,)`` stride of each location's level (pixels).
        gt_classes: ``(B, M)`` int64 (negative for padding: class 0 is used, mask it afterwards).
        mu, sigma: ``(K, 2)`` learnable ``(x, y)`` mean and standard deviation, in stride units.

    Returns:
        ``(B, M, R)`` float32 in ``(0, 1]``: ``prod_{x,y} exp(-(d - mu_c)^2 / (2 sigma_c^2))`` with
        ``d = ((l - r) / 2, (t - b) / 2) / stride`` = offset from the box centre in strides.
        Differentiable in ``mu`` and ``sigma``.
    """
    d = torch.stack(((deltas[..., 0] - deltas[..., 2]) / 2, (deltas[..., 1] - deltas[..., 3]) / 2), dim=-1)
    d = d / strides.float()[None, None, :, None]
    cls = gt_classes.clamp(min=0)
    mu_c = mu.float()[cls][:, :, None]  # (B, M, 1, 2)
    sigma_c = sigma.float()[cls][:, :, None]
    return torch.exp(-((d - mu_c) ** 2) / (2 * sigma_c ** 2)).prod(dim=-1)


def autoassign_positive_weights(confidence: torch.Tensor, in_box: torch.Tensor, prior: torch.Tensor,
                                temperature: float = 1.0 / 3.0) -> torch.Tensor:
    """Positive weights ``w+_ij`` (paper Eq. 9-10; code ``positive_bag_loss``).

    Args:
        confidence: ``(..., R)`` joint confidence ``C_ij`` in [0, 1].
        in_box: ``(..., R)`` bool, locations inside the GT.
        prior: ``(..., R)`` centre prior ``G_ij``.
        temperature: ``tau``; the code's ``exp(3 * C)`` is ``tau = 1/3``.

    Returns:
        ``(..., R)`` weights summing to 1 over the in-box locations of each GT (all 0 for a GT
        containing no location: the code's ``clamp(min=1e-12)`` of the sum).
    """
    weight = torch.exp(confidence / temperature) * prior * in_box.to(confidence.dtype)
    return weight / weight.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def positive_bag_loss(confidence: torch.Tensor, in_box: torch.Tensor, prior: torch.Tensor,
                      temperature: float = 1.0 / 3.0) -> torch.Tensor:
    """``-log(sum_j w+_ij C_ij)`` per GT (code ``positive_bag_loss``: BCE of the bag probability
    against 1, ``log`` clamped at -100 as ``torch.nn.functional.binary_cross_entropy``).

    Shapes as :func:`autoassign_positive_weights`; returns ``(...)`` (one value per GT).
    """
    w = autoassign_positive_weights(confidence, in_box, prior, temperature)
    bag_prob = (w * confidence).sum(dim=-1).clamp(0.0, 1.0)
    return F.binary_cross_entropy(bag_prob, torch.ones_like(bag_prob), reduction="none")


def negative_bag_loss(probs: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal BCE against 0, elementwise: ``p^gamma * -log(1 - p)`` (code ``negative_bag_loss``;
    ``log`` clamped at -100). ``probs`` any shape, in [0, 1]."""
    return probs ** gamma * F.binary_cross_entropy(probs, torch.zeros_like(probs), reduction="none")


def _batched_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """``(B, M, 4)`` x ``(B, R, 4)`` XYXY -> ``(B, M, R)`` IoU, 0 where the intersection is empty
    (detectron2 / cvpods ``pairwise_iou``)."""
    lt = torch.max(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    rb = torch.min(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    union = area1[:, :, None] + area2[:, None, :] - inter
    return torch.where(inter > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


@torch.no_grad()
def autoassign_negative_box_prob(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                                 gt_valid: torch.Tensor, in_box: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``P(a_j in A+)`` per (location, class): the map whose complement is the negative weight
    ``w-`` (paper Eq. 11; code ``pred_box_prob_per_image``). No gradient.

    Args:
        pred_boxes: ``(B, R, 4)`` XYXY_ABS predicted boxes of the locations.
        gt_boxes: ``(B, M, 4)`` XYXY_ABS; gt_classes ``(B, M)``; gt_valid ``(B, M)``.
        in_box: ``(B, M, R)`` of :func:`autoassign_target_deltas`.
        num_classes: K.

    Returns:
        ``(B, R, K)`` float32 in [0, 1]: at ``(j, c_i)`` for ``j`` inside GT ``i`` the min-max
        normalised ``1 / (1 - max_i' IoU(pred_j, gt_i'))`` over GT ``i``'s in-box locations
        (the last GT of that class wins where several contain ``j``), 0 elsewhere.
    """
    b, m, r = in_box.shape
    iou = _batched_iou(gt_boxes.float(), pred_boxes.float())  # (B, M, R)
    iou = torch.where(gt_valid[:, :, None], iou, torch.zeros_like(iou))
    best = iou.max(dim=1).values  # (B, R): over all GTs of the image
    v = (1.0 / (1.0 - best).clamp(min=1e-12))[:, None, :].expand(b, m, r)
    inf = torch.tensor(float("inf"), device=v.device)
    v_min = torch.where(in_box, v, inf).min(dim=-1, keepdim=True).values
    v_max = torch.where(in_box, v, -inf).max(dim=-1, keepdim=True).values
    value = (v - v_min + 1e-12) / (v_max - v_min + 1e-12)
    value = torch.where(in_box, value, torch.zeros_like(value))

    # Scatter to (j, c_i); where several same-class GTs contain j, the last GT (largest index) wins.
    flat_index = (torch.arange(r, device=v.device)[None, None, :] * num_classes
                  + gt_classes.clamp(min=0)[:, :, None]).reshape(b, m * r)
    gt_index = torch.arange(m, device=v.device)[None, :, None].expand(b, m, r)
    src = torch.where(in_box, gt_index, torch.full_like(gt_index, -1)).reshape(b, m * r)
    winner = torch.full((b, r * num_classes), -1, dtype=torch.int64, device=v.device)
    winner.scatter_reduce_(1, flat_index, src, reduce="amax")
    keep = in_box.reshape(b, m * r) & (winner.gather(1, flat_index) == gt_index.reshape(b, m * r))
    out = torch.zeros(b, r * num_classes, dtype=torch.float32, device=v.device)
    out.scatter_add_(1, flat_index, torch.where(keep, value.reshape(b, m * r), torch.zeros_like(src, dtype=out.dtype)))
    return out.view(b, r, num_classes)


def autoassign_losses(
    locations: torch.Tensor,
    strides: torch.Tensor,
    cls_logits: torch.Tensor,
    box_regression: torch.Tensor,
    obj_logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_valid: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    *,
    reg_weight: float = 5.0,
    iou_loss_type: str = "giou",
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    temperature: float = 1.0 / 3.0,
) -> Dict[str, torch.Tensor]:
    """AutoAssign's three losses for a batch (see the module docstring for the equations).

    Computed in float32 with autocast disabled (``binary_cross_entropy`` is not autocast-safe and
    the weights are exponentials of probabilities).

    Args:
        locations: ``(R, 2)`` ``(x, y)`` pixels of all levels' locations, concatenated P3..P7.
        strides: ``(R,)`` each location's stride.
        cls_logits: ``(B, R, K)`` classification logits.
        box_regression: ``(B, R, 4)`` predicted ``(l, t, r, b)`` pixels (non-negative).
        obj_logits: ``(B, R)`` implicit-objectness logits.
        gt_boxes, gt_classes, gt_valid: ``(B, M, 4)`` XYXY_ABS, ``(B, M)`` int64, ``(B, M)`` bool
            (:func:`common.modeling.dense_head.pad_gt_instances`).
        mu, sigma: ``(K, 2)`` centre-prior parameters (stride units).
        reg_weight: ``lambda`` of ``P_loc = exp(-lambda * L_loc)`` (code ``REG_WEIGHT`` 5.0).
        iou_loss_type: ``L_loc`` (cvpods ``IOU_LOSS_TYPE`` "giou"; "iou", "linear_iou").
        focal_alpha: positive / negative balance (``FOCAL_LOSS_ALPHA`` 0.25).
        focal_gamma: exponent of the negative focal BCE (``FOCAL_LOSS_GAMMA`` 2.0).
        temperature: ``tau`` of the positive weights (1/3).

    The normalisers (the GT count and ``sum_{i, j in box} G_ij``) are summed over processes and
    divided by the world size (``common.utils.comm``), as the code's ``all_reduce``.

    Returns:
        ``{"loss_pos", "loss_neg", "loss_norm"}`` scalars (the code's names), finite also for
        images without GTs; NaN when a prediction is not finite.
    """
    b, r, k = cls_logits.shape
    if box_regression.shape != (b, r, 4) or obj_logits.shape != (b, r) or locations.shape != (r, 2):
        raise ValueError(
            f"autoassign_losses: cls_logits {tuple(cls_logits.shape)}, box_regression {tuple(box_regression.shape)}, "
            f"obj_logits {tuple(obj_logits.shape)} and locations {tuple(locations.shape)} do not match"
        )
    if mu.shape != (k, 2) or sigma.shape != (k, 2):
        raise ValueError(f"autoassign_losses: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} must be ({k}, 2)")
    # Diverged predictions give NaN losses (the trainer's "Loss became infinite or NaN" check) instead
    # of binary_cross_entropy's range error; one reduction and one sync.
    if not bool(torch.isfinite(cls_logits.float().sum() + box_regression.float().sum() + obj_logits.float().sum())):
        nan = (cls_logits.float().sum() + box_regression.float().sum() + obj_logits.float().sum()) * float("nan")
        return {"loss_pos": nan, "loss_neg": nan, "loss_norm": nan}
    device_type = cls_logits.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        cls_prob = cls_logits.float().sigmoid()  # (B, R, K)
        obj_prob = obj_logits.float().sigmoid()  # (B, R)
        reg = box_regression.float()
        m = gt_boxes.shape[1]
        deltas, in_box = autoassign_target_deltas(locations, gt_boxes, gt_valid)  # (B, M, R, 4), (B, M, R)
        prior = autoassign_center_prior(deltas, strides, gt_classes, mu, sigma)  # (B, M, R)

        cls_index = gt_classes.clamp(min=0)[:, :, None].expand(b, m, r)
        composed = cls_prob.transpose(1, 2).gather(1, cls_index) * obj_prob[:, None, :]  # (B, M, R)
        loc_loss = iou_loss(reg[:, None].expand(b, m, r, 4).reshape(-1, 4), deltas.reshape(-1, 4),
                            loss_type=iou_loss_type, smooth=False, reduction="none").view(b, m, r)
        # Pairs outside the box are masked out of the bag; their "IoU" of ltrb distances with negative
        # targets is meaningless here (no intersection clamp as cvpods'), so their loss is set to 0 first.
        loc_loss = torch.where(in_box, loc_loss, torch.zeros_like(loc_loss))
        confidence = composed * torch.exp(-reg_weight * loc_loss)
        pos_losses = positive_bag_loss(confidence, in_box, prior, temperature)  # (B, M)
        pos_losses = torch.where(gt_valid, pos_losses, torch.zeros_like(pos_losses))

        inbox_f = in_box.float()
        prior_sum = (prior * inbox_f).sum(dim=(1, 2))  # (B,)
        # The code's all_reduce + division by the world size (identity in one process).
        world = comm.get_world_size()
        num_gt = comm.all_reduce_sum(float(gt_valid.sum()), device=cls_logits.device) / world
        num_background = comm.all_reduce_sum(float(prior_sum.detach().sum()), device=cls_logits.device) / world
        loss_pos = pos_losses.sum() / max(1.0, num_gt) * focal_alpha

        box2box = Box2BoxTransformLinear(normalize_by_size=False)
        pred_boxes = box2box.apply_deltas(reg.detach(), box2box.points_to_boxes(locations.float()))  # (B, R, 4)
        box_prob = autoassign_negative_box_prob(pred_boxes, gt_boxes, gt_classes, gt_valid, in_box, k)
        neg = negative_bag_loss(cls_prob * obj_prob[..., None] * (1.0 - box_prob), focal_gamma)
        loss_neg = neg.sum() / max(1.0, num_background) * (1.0 - focal_alpha)

        n_img = gt_valid.sum(dim=1).float()
        norm = torch.where(prior_sum > 0, n_img / prior_sum.clamp(min=1e-12), torch.zeros_like(prior_sum))
        loss_norm = norm.mean() * (1.0 - focal_alpha)
    return {"loss_pos": loss_pos, "loss_neg": loss_neg, "loss_norm": loss_norm}
