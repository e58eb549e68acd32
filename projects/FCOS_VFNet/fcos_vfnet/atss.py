"""ATSS detector (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via
Adaptive Training Sample Selection", CVPR 2020) as mmdetection's ``atss_r50_fpn_1x_coco``
(``mmdet/models/dense_heads/atss_head.py``, the code of the released 39.4 AP model).

One square anchor of side ``8 * stride`` per location (centred at ``(j*s, i*s)``), labels from
:class:`common.assigners.ATSSAssigner`, R-CNN deltas with weights (10, 10, 5, 5) decoded by
``Box2BoxTransform``; a centerness branch on the box tower.

Losses (mmdet ``ATSSHead.loss``): focal (0.25, 2) over the anchors inside each image's padded
extent / num_pos; GIoU (weight 2) of the decoded positives, weighted by their centerness target
and divided by the sum of the centerness targets; centerness BCE / num_pos. Normalisers are
all-reduced over processes (``reduce_mean``).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from common.assigners import ATSSAssigner, centerness_targets
from common.losses import giou_loss, sigmoid_focal_loss
from common.modeling import META_ARCH_REGISTRY, build_backbone
from common.modeling.anchor_generator import DefaultAnchorGenerator
from common.modeling.box_regression import Box2BoxTransform, Box2BoxTransformLinear
from common.modeling.dense_head import (
    Scale,
    build_dense_tower,
    init_dense_head_convs,
    pad_gt_instances,
    permute_to_N_HWA_K,
    prior_prob_bias,
    reduce_mean_across_processes,
)
from common.modeling.dense_postprocess import dense_detection_postprocess
from common.structures import ImageList, Instances

from .base import DenseDetector, valid_location_masks

__all__ = ["ATSS", "ATSSHead"]


class ATSSHead(nn.Module):
    """mmdet ``ATSSHead`` in detectron2 names: ``cls_subnet`` / ``bbox_subnet`` (4 x conv (no bias)
    + GN + ReLU), ``cls_score`` (3x3 -> K), ``bbox_pred`` (3x3 -> 4 deltas), ``centerness``
    (3x3 -> 1, on the box tower), ``scales.{l}.scale`` ``(1,)`` on the deltas.

    ``forward(features)`` -> per level ``logits (N, K, H, W)``, ``deltas (N, 4, H, W)`` (float32),
    ``centerness (N, 1, H, W)``.
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, *, num_convs: int = 4,
                 norm: str = "GN", conv_bias: bool = False, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.cls_subnet = build_dense_tower(in_channels, num_convs, norm=norm, conv_bias=conv_bias)
        self.bbox_subnet = build_dense_tower(in_channels, num_convs, norm=norm, conv_bias=conv_bias)
        self.cls_score = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        init_dense_head_convs(nn.ModuleList([self.cls_score, self.bbox_pred, self.centerness]))
        nn.init.constant_(self.cls_score.bias, prior_prob_bias(prior_prob))

    def forward(self, features: List[torch.Tensor]):
        logits, deltas, ctrness = [], [], []
        for level, x in enumerate(features):
            cls_feat = self.cls_subnet(x)
            reg_feat = self.bbox_subnet(x)
            logits.append(self.cls_score(cls_feat))
            deltas.append(self.scales[level](self.bbox_pred(reg_feat)).float())
            ctrness.append(self.centerness(reg_feat))
        return logits, deltas, ctrness


@META_ARCH_REGISTRY.register()
class ATSS(DenseDetector):
    """ATSS meta-architecture: ``backbone`` (ResNet-FPN P3-P7, P7 without ReLU in the released
    config) + ``head`` (:class:`ATSSHead`). Losses ``loss_cls``, ``loss_bbox``, ``loss_centerness``;
    inference: per level the top 1000 anchors by ``max_c cls * ctr``, pairs with ``cls > 0.05``
    scored ``cls * ctr``, NMS 0.6, ``TEST.DETECTIONS_PER_IMAGE`` (mmdet ``multiclass_nms``).

    Raises:
        ValueError: bad ``MODEL.ATSS`` settings (named).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        a = cfg.MODEL.ATSS
        self.backbone = build_backbone(cfg)
        shapes = self.backbone.output_shape()
        missing = [k for k in a.IN_FEATURES if k not in shapes]
        if missing:
            raise ValueError(f"MODEL.ATSS.IN_FEATURES {missing} are not backbone outputs ({list(shapes)})")
        self.in_features = list(a.IN_FEATURES)
        self.strides = [shapes[k].stride for k in self.in_features]
        self.num_classes = a.NUM_CLASSES
        self.head = ATSSHead(shapes[self.in_features[0]].channels, len(self.in_features), a.NUM_CLASSES,
                             num_convs=a.NUM_CONVS, norm=a.NORM, conv_bias=a.CONV_BIAS, prior_prob=a.PRIOR_PROB)
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[a.ANCHOR_SCALE * s] for s in self.strides], aspect_ratios=[[1.0]], strides=self.strides, offset=0.0)
        self.box2box = Box2BoxTransform(weights=a.BBOX_REG_WEIGHTS)
        self.assigner = ATSSAssigner(topk=a.TOPK)
        self.focal_alpha, self.focal_gamma = a.FOCAL_LOSS_ALPHA, a.FOCAL_LOSS_GAMMA
        self.loss_bbox_weight, self.loss_ctr_weight = a.LOSS_BBOX_WEIGHT, a.LOSS_CENTERNESS_WEIGHT
        self.test_cfg = (a.SCORE_THRESH_TEST, a.TOPK_CANDIDATES_TEST, a.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE)
        self._setup_pixels(cfg)

    def _forward_head(self, features):
        feats = [features[k] for k in self.in_features]
        anchors = [b.tensor for b in self.anchor_generator(feats)]
        return feats, anchors, self.head(feats)

    def losses(self, images: ImageList, features, gt: List[Instances]) -> Dict[str, torch.Tensor]:
        feats, anchors, (logits, deltas, ctrness) = self._forward_head(features)
        k = self.num_classes
        device = logits[0].device
        gt_boxes, gt_classes, gt_valid = pad_gt_instances(gt, device, k, "MODEL.ATSS.NUM_CLASSES")
        valid = valid_location_masks(images.image_sizes, [tuple(x.shape[-2:]) for x in feats], self.strides,
                                     self.backbone.size_divisibility, device)
        matched = self.assigner(anchors, gt_boxes, gt_valid, valid)  # (B, A)
        pos = matched >= 0
        idx = matched.clamp(min=0)
        labels = gt_classes.gather(1, idx)
        matched_boxes = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4))

        logits_flat = torch.cat([permute_to_N_HWA_K(x, k) for x in logits], dim=1).float()
        deltas_flat = torch.cat([permute_to_N_HWA_K(x, 4) for x in deltas], dim=1)
        ctr_flat = torch.cat([permute_to_N_HWA_K(x, 1) for x in ctrness], dim=1).squeeze(-1).float()
        all_anchors = torch.cat(anchors)[None].expand(len(gt), -1, -1)

        num_pos = reduce_mean_across_processes(int(pos.sum()), device)
        target = torch.zeros_like(logits_flat)
        target[pos, labels[pos]] = 1.0
        loss_cls = sigmoid_focal_loss(logits_flat[valid], target[valid], self.focal_alpha, self.focal_gamma,
                                      reduction="sum") / num_pos

        pos_anchors, pos_gt = all_anchors[pos], matched_boxes[pos]
        ctr_tgt = centerness_targets(Box2BoxTransformLinear(normalize_by_size=False).get_deltas(pos_anchors, pos_gt))
        bbox_norm = reduce_mean_across_processes(float(ctr_tgt.sum()), device, min_value=1e-6)
        if pos_anchors.shape[0] > 0:
            pred_boxes = self.box2box.apply_deltas(deltas_flat[pos], pos_anchors)
            loss_bbox = (giou_loss(pred_boxes, pos_gt) * ctr_tgt).sum() / bbox_norm
            loss_ctr = F.binary_cross_entropy_with_logits(ctr_flat[pos], ctr_tgt, reduction="sum") / num_pos
        else:
            loss_bbox = deltas_flat.sum() * 0
            loss_ctr = ctr_flat.sum() * 0
        return {"loss_cls": loss_cls, "loss_bbox": self.loss_bbox_weight * loss_bbox,
                "loss_centerness": self.loss_ctr_weight * loss_ctr}

    def inference(self, images: ImageList, features) -> List[Instances]:
        feats, anchors, (logits, deltas, ctrness) = self._forward_head(features)
        thresh, topk, nms, max_det = self.test_cfg
        k = self.num_classes
        results = []
        for i, size in enumerate(images.image_sizes):
            boxes, scores, th_scores = [], [], []
            for lg, dl, ct, anc in zip(logits, deltas, ctrness, anchors):
                cls = permute_to_N_HWA_K(lg[i:i + 1], k)[0].float().sigmoid()
                ctr = permute_to_N_HWA_K(ct[i:i + 1], 1)[0].float().sigmoid()
                boxes.append(self.box2box.apply_deltas(permute_to_N_HWA_K(dl[i:i + 1], 4)[0], anc))
                scores.append(cls * ctr)
                th_scores.append(cls)
            results.append(dense_detection_postprocess(
                boxes, scores, size, score_thresh=thresh, topk_candidates=topk, nms_thresh=nms,
                max_detections=max_det, threshold_scores=th_scores, topk_mode="locations",
            ))
        return results
