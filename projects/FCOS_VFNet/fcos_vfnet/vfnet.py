"""VarifocalNet (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021) as the
authors' ``mmdet/models/dense_heads/vfnet_head.py`` (hyz-xmaster/VarifocalNet).

Head per level (shared):

* ``cls_subnet`` / ``bbox_subnet``: 3 x [3x3 conv (no bias) + GN + ReLU] (last conv modulated
  deformable with ``DCN_ON_LAST_CONV``);
* initial box: ``reg_conv`` (conv + GN + ReLU) -> ``bbox_pred`` -> ``Scale`` -> ``exp`` ->
  ``x reg_denom`` (64, 128, 256, 512, 1024): ``(l, t, r, b)`` in pixels from the point ``(j*s, i*s)``;
* star-shaped deformable sampling (Sec. 3.3, :func:`star_dcn_offset`): the 9 taps of a 3x3
  deformable conv sample ``(x - l', y - t')``, ``(x, y - t')``, ... ``(x + r', y + b')`` with
  ``l' = l / stride``; the gradient into the initial box through the offsets is scaled by 0.1;
* refinement: ``reg_refine_dconv`` (on the 3-conv box feature) -> ReLU -> ``bbox_pred_refine`` ->
  ``Scale`` -> ``exp``, times the detached initial box;
* IoU-aware classification score: ``cls_dconv`` (same offsets) -> ReLU -> ``cls_score``.

Training (``VFNetHead.loss``): ATSS labels (anchors of side ``8 * stride``), classification target
``q`` = IoU of the *refined* box with its GT at the GT class (0 elsewhere), varifocal loss / num_pos;
GIoU (weight 1.5) on the initial boxes weighted by their IoU and divided by the sum of those IoUs,
GIoU (weight 2.0) on the refined boxes likewise; normalisers all-reduced over processes.
Inference: refined boxes, sigmoid scores, per level top 1000 locations by max score, score > 0.05,
NMS 0.6, 100 per image.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from common.assigners import ATSSAssigner, fcos_size_ranges, fcos_targets
from common.layers import DeformConv
from common.losses import giou_loss, varifocal_loss
from common.modeling import META_ARCH_REGISTRY, build_backbone
from common.modeling.box_regression import Box2BoxTransformLinear
from common.modeling.dense_head import (
    Scale,
    build_dense_tower,
    compute_locations,
    init_dense_head_convs,
    pad_gt_instances,
    permute_to_N_HWA_K,
    prior_prob_bias,
    reduce_mean_across_processes,
)
from common.modeling.dense_postprocess import dense_detection_postprocess
from common.structures import ImageList, Instances

from .base import DenseDetector, valid_location_masks

__all__ = ["VFNet", "VFNetHead", "aligned_box_iou", "bound_offsets", "star_dcn_offset"]

# Regular-grid positions (dy, dx) of the 3x3 taps, row-major: what deform_conv2d adds the offsets to.
_DCN_BASE = torch.tensor([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=torch.float32).reshape(-1)


def star_dcn_offset(ltrb: torch.Tensor, stride: int, gradient_mul: float = 0.1) -> torch.Tensor:
    """Offsets that make a 3x3 deformable conv (padding 1) sample the star points of a box.

    For a cell ``p = (i, j)`` (feature-map units) with distances ``(l, t, r, b)`` (pixels) to the
    sides of its box, tap ``(ky, kx)`` (row-major) samples ``p + (dy_ky, dx_kx)`` with
    ``dy in (-t', 0, b')`` and ``dx in (-l', 0, r')``, ``l' = l / stride`` etc.; the returned offset
    is that displacement minus the regular-grid position ``(ky - 1, kx - 1)``.

    Args:
        ltrb: ``(N, 4, H, W)`` non-negative distances in pixels (the initial box).
        stride: the level stride.
        gradient_mul: the offsets see ``(1 - g) * ltrb.detach() + g * ltrb`` (VFNet: 0.1).

    Returns:
        ``(N, 18, H, W)`` offsets, interleaved ``(dy, dx)`` per tap (the layout of
        ``torchvision.ops.deform_conv2d`` and mmcv), dtype of ``ltrb``.

    Source: ``vfnet_head.py`` ``star_dcn_offset`` and ``dcn_base_offset``.
    """
    pred = (1.0 - gradient_mul) * ltrb.detach() + gradient_mul * ltrb
    pred = pred / stride
    l, t, r, b = pred.unbind(dim=1)
    zero = torch.zeros_like(l)
    dys, dxs = (-t, zero, b), (-l, zero, r)
    taps = [c for dy in dys for dx in dxs for c in (dy, dx)]
    offset = torch.stack(taps, dim=1)
    return offset - _DCN_BASE.to(offset)[None, :, None, None]


def bound_offsets(offset: torch.Tensor) -> torch.Tensor:
    """Make deformable-conv offsets finite without changing what they sample.

    A diverging box prediction (``exp`` overflow) gives inf/NaN offsets; mmcv's CUDA kernel samples
    0 there (its bounds test is false for NaN), while torchvision's CPU kernel reads out of bounds.
    Offsets are clamped to +-(max(H, W) + 2) cells (still outside the map, so still 0) and NaN is sent
    outside the map too.
    """
    bound = float(max(offset.shape[-2:]) + 2)
    return torch.nan_to_num(offset, nan=bound, posinf=bound, neginf=-bound).clamp(-bound, bound)


def aligned_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of matched pairs ``(N, 4)`` XYXY -> ``(N,)`` float32 (mmdet ``bbox_overlaps(is_aligned=True)``,
    union clamped at ``eps``)."""
    boxes1, boxes2 = boxes1.float(), boxes2.float()
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / (area1 + area2 - inter).clamp(min=eps)


class VFNetHead(nn.Module):
    """VFNet head (see module docstring). Keys: ``cls_subnet``, ``bbox_subnet``, ``reg_conv``,
    ``bbox_pred``, ``scales``, ``reg_refine_dconv`` (``weight`` only), ``bbox_pred_refine``,
    ``scales_refine``, ``cls_dconv``, ``cls_score``.

    ``forward(features, strides, reg_denoms)`` -> per level ``logits (N, K, H, W)``, initial
    ``ltrb (N, 4, H, W)`` and refined ``ltrb_refine (N, 4, H, W)``, float32 pixels.
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, *, num_convs: int = 3,
                 norm: str = "GN", conv_bias: bool = False, dcn_on_last_conv: bool = False,
                 prior_prob: float = 0.01, gradient_mul: float = 0.1) -> None:
        super().__init__()
        c = in_channels
        tower = dict(norm=norm, conv_bias=conv_bias, deformable_last=dcn_on_last_conv)
        self.cls_subnet = build_dense_tower(c, num_convs, **tower)
        self.bbox_subnet = build_dense_tower(c, num_convs, **tower)
        self.reg_conv = build_dense_tower(c, 1, norm=norm, conv_bias=conv_bias)
        self.bbox_pred = nn.Conv2d(c, 4, 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.reg_refine_dconv = DeformConv(c, c, 3, stride=1, padding=1)
        self.bbox_pred_refine = nn.Conv2d(c, 4, 3, 1, 1)
        self.scales_refine = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.cls_dconv = DeformConv(c, c, 3, stride=1, padding=1)
        self.cls_score = nn.Conv2d(c, num_classes, 3, 1, 1)
        self.gradient_mul = gradient_mul
        init_dense_head_convs(nn.ModuleList([self.bbox_pred, self.bbox_pred_refine, self.cls_score]))
        for dconv in (self.reg_refine_dconv, self.cls_dconv):
            nn.init.normal_(dconv.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, prior_prob_bias(prior_prob))

    def forward(self, features: List[torch.Tensor], strides: List[int], reg_denoms: List[float]):
        logits, ltrb_init, ltrb_refine = [], [], []
        for level, (x, stride, denom) in enumerate(zip(features, strides, reg_denoms)):
            cls_feat = self.cls_subnet(x)
            reg_feat = self.bbox_subnet(x)
            init = self.scales[level](self.bbox_pred(self.reg_conv(reg_feat))).float().exp() * denom
            offset = bound_offsets(star_dcn_offset(init, stride, self.gradient_mul)).to(reg_feat.dtype)
            reg_feat = F.relu(self.reg_refine_dconv(reg_feat, offset))
            refine = self.scales_refine[level](self.bbox_pred_refine(reg_feat)).float().exp() * init.detach()
            cls_feat = F.relu(self.cls_dconv(cls_feat, offset))
            logits.append(self.cls_score(cls_feat))
            ltrb_init.append(init)
            ltrb_refine.append(refine)
        return logits, ltrb_init, ltrb_refine


@META_ARCH_REGISTRY.register()
class VFNet(DenseDetector):
    """VarifocalNet meta-architecture: ``backbone`` (ResNet-FPN P3-P7) + ``head`` (:class:`VFNetHead`).
    Losses ``loss_cls`` (varifocal), ``loss_bbox`` (initial boxes), ``loss_bbox_refine``.

    Raises:
        ValueError: bad ``MODEL.VFNET`` settings (named).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        v = cfg.MODEL.VFNET
        self.backbone = build_backbone(cfg)
        shapes = self.backbone.output_shape()
        missing = [k for k in v.IN_FEATURES if k not in shapes]
        if missing:
            raise ValueError(f"MODEL.VFNET.IN_FEATURES {missing} are not backbone outputs ({list(shapes)})")
        self.in_features = list(v.IN_FEATURES)
        self.strides = [shapes[k].stride for k in self.in_features]
        if len(v.SIZES_OF_INTEREST) != len(self.strides) - 1:
            raise ValueError(f"MODEL.VFNET.SIZES_OF_INTEREST needs {len(self.strides) - 1} values, got "
                             f"{list(v.SIZES_OF_INTEREST)}")
        self.size_ranges = fcos_size_ranges(v.SIZES_OF_INTEREST)
        if v.BBOX_NORM_TYPE == "reg_denom":
            # mmdet: the upper bounds of the regress ranges, the last one twice the previous.
            self.reg_denoms = [float(s) for s in v.SIZES_OF_INTEREST] + [2.0 * float(v.SIZES_OF_INTEREST[-1])]
        elif v.BBOX_NORM_TYPE == "stride":
            self.reg_denoms = [float(s) for s in self.strides]
        else:
            raise ValueError(f"MODEL.VFNET.BBOX_NORM_TYPE must be 'reg_denom' or 'stride', got {v.BBOX_NORM_TYPE!r}")
        self.num_classes = v.NUM_CLASSES
        self.head = VFNetHead(shapes[self.in_features[0]].channels, len(self.in_features), v.NUM_CLASSES,
                              num_convs=v.NUM_CONVS, norm=v.NORM, conv_bias=v.CONV_BIAS,
                              dcn_on_last_conv=v.DCN_ON_LAST_CONV, prior_prob=v.PRIOR_PROB,
                              gradient_mul=v.GRADIENT_MUL)
        self.use_atss = v.USE_ATSS
        self.anchor_scale = v.ANCHOR_SCALE
        self.assigner = ATSSAssigner(topk=v.TOPK)
        self.center_sampling_radius = v.CENTER_SAMPLE_RADIUS if v.CENTER_SAMPLING else 0.0
        self.vfl = (v.VFL_ALPHA, v.VFL_GAMMA, v.VFL_IOU_WEIGHTED)
        self.loss_weights = (v.LOSS_CLS_WEIGHT, v.LOSS_BBOX_WEIGHT, v.LOSS_BBOX_REFINE_WEIGHT)
        self.test_cfg = (v.SCORE_THRESH_TEST, v.TOPK_CANDIDATES_TEST, v.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE)
        self.box2box = Box2BoxTransformLinear(normalize_by_size=False)
        self._setup_pixels(cfg)

    def points(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level ``(H W, 2)``: ``(j*s, i*s)`` with ATSS (mmdet ``center_offset=0``), else the
        FCOS cell centres ``(j*s + s//2, i*s + s//2)``."""
        offset = 0.0 if self.use_atss else 0.5
        return [compute_locations(x.shape[-2], x.shape[-1], s, offset, x.device) for x, s in zip(feats, self.strides)]

    def _forward_head(self, features):
        feats = [features[k] for k in self.in_features]
        return feats, self.points(feats), self.head(feats, self.strides, self.reg_denoms)

    def losses(self, images: ImageList, features, gt: List[Instances]) -> Dict[str, torch.Tensor]:
        feats, points, (logits, ltrb_init, ltrb_refine) = self._forward_head(features)
        k = self.num_classes
        device = logits[0].device
        gt_boxes, gt_classes, gt_valid = pad_gt_instances(gt, device, k, "MODEL.VFNET.NUM_CLASSES")
        if self.use_atss:
            anchors = [torch.cat((p - self.anchor_scale * s / 2.0, p + self.anchor_scale * s / 2.0), dim=1)
                       for p, s in zip(points, self.strides)]
            valid = valid_location_masks(images.image_sizes, [tuple(x.shape[-2:]) for x in feats], self.strides,
                                         self.backbone.size_divisibility, device)
            matched = self.assigner(anchors, gt_boxes, gt_valid, valid)
        else:
            _, _, matched = fcos_targets(points, self.strides, self.size_ranges, gt_boxes, gt_classes, gt_valid, k,
                                         self.center_sampling_radius, norm_by_stride=False)
        pos = matched >= 0
        idx = matched.clamp(min=0)
        labels = gt_classes.gather(1, idx)[pos]
        pos_gt = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4))[pos]
        pos_points = torch.cat(points)[None].expand(len(gt), -1, -1)[pos]

        logits_flat = torch.cat([permute_to_N_HWA_K(x, k) for x in logits], dim=1).float()
        init_flat = torch.cat([permute_to_N_HWA_K(x, 4) for x in ltrb_init], dim=1)
        refine_flat = torch.cat([permute_to_N_HWA_K(x, 4) for x in ltrb_refine], dim=1)
        num_pos = reduce_mean_across_processes(int(pos.sum()), device)
        cls_target = torch.zeros_like(logits_flat)
        w_cls, w_init, w_refine = self.loss_weights
        if pos_points.shape[0] > 0:
            refs = self.box2box.points_to_boxes(pos_points)
            init_boxes = self.box2box.apply_deltas(init_flat[pos], refs)
            refine_boxes = self.box2box.apply_deltas(refine_flat[pos], refs)
            iou_init = aligned_box_iou(init_boxes, pos_gt).clamp(min=1e-6).detach()
            iou_refine = aligned_box_iou(refine_boxes, pos_gt).clamp(min=1e-6).detach()
            norm_init = reduce_mean_across_processes(float(iou_init.sum()), device)
            norm_refine = reduce_mean_across_processes(float(iou_refine.sum()), device)
            loss_bbox = (giou_loss(init_boxes, pos_gt) * iou_init).sum() / norm_init
            loss_refine = (giou_loss(refine_boxes, pos_gt) * iou_refine).sum() / norm_refine
            b_idx, l_idx = torch.nonzero(pos, as_tuple=True)
            cls_target[b_idx, l_idx, labels] = iou_refine
        else:
            loss_bbox = init_flat.sum() * 0
            loss_refine = refine_flat.sum() * 0
        alpha, gamma, iou_weighted = self.vfl
        loss_cls = varifocal_loss(logits_flat, cls_target, alpha, gamma, iou_weighted, reduction="sum") / num_pos
        return {"loss_cls": w_cls * loss_cls, "loss_bbox": w_init * loss_bbox, "loss_bbox_refine": w_refine * loss_refine}

    def inference(self, images: ImageList, features) -> List[Instances]:
        feats, points, (logits, _, ltrb_refine) = self._forward_head(features)
        thresh, topk, nms, max_det = self.test_cfg
        k = self.num_classes
        results = []
        for i, size in enumerate(images.image_sizes):
            boxes, scores = [], []
            for lg, rf, pts in zip(logits, ltrb_refine, points):
                scores.append(permute_to_N_HWA_K(lg[i:i + 1], k)[0].float().sigmoid())
                boxes.append(self.box2box.apply_deltas(permute_to_N_HWA_K(rf[i:i + 1], 4)[0],
                                                       self.box2box.points_to_boxes(pts)))
            results.append(dense_detection_postprocess(
                boxes, scores, size, score_thresh=thresh, topk_candidates=topk, nms_thresh=nms,
                max_detections=max_det, topk_mode="locations",
            ))
        return results
