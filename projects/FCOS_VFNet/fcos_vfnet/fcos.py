"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019) as in
AdelaiDet (``adet/modeling/fcos/fcos.py``, ``fcos_outputs.py``), with the original FCOS of the
official code (``fcos_core/modeling/rpn/fcos/``) as a config switch.

Module names are AdelaiDet's (``backbone.*``, ``proposal_generator.fcos_head.*``): a model built from
``fcos.R_50_1x.yaml`` has exactly the keys and shapes of AdelaiDet's ``FCOS_R_50_1x.pth``, and the
official ``FCOS_imprv_R_50_FPN_1x.pth`` is renamed to them on load (maskrcnn-benchmark format).

Variants (``MODEL.FCOS``):

* AdelaiDet / FCOS-imprv (defaults): regression ``ReLU(scale * x)`` in stride units, centerness on
  the box tower, centre sampling 1.5, GIoU loss;
* original FCOS (``NORM_REG_TARGETS False``, ``CENTERNESS_ON_REG False``, ``CENTER_SAMPLE False``,
  ``LOC_LOSS_TYPE iou``): ``exp(scale * x)`` in pixels, centerness on the classification tower.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.assigners import centerness_targets, fcos_size_ranges, fcos_targets
from common.layers import ShapeSpec
from common.losses import iou_loss, sigmoid_focal_loss
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

from .base import DenseDetector

__all__ = ["FCOS", "FCOSHead", "FCOSModule"]


class FCOSHead(nn.Module):
    """Shared head over P3-P7 (AdelaiDet ``FCOSHead``).

    Keys: ``share_tower`` (empty by default), ``cls_tower`` / ``bbox_tower``
    (:func:`common.modeling.dense_head.build_dense_tower`, biased convs + GN: ``{0,1,3,4,...}``),
    ``cls_logits`` (3x3 -> K), ``bbox_pred`` (3x3 -> 4), ``ctrness`` (3x3 -> 1),
    ``scales.{l}.scale`` ``(1,)``.

    ``forward(features)`` -> per level ``logits (N, K, H, W)``, ``bbox_reg (N, 4, H, W)``
    (non-negative: ``ReLU(scale * x)`` in stride units, or ``exp(scale * x)`` in pixels with
    ``norm_reg_targets=False``; float32), ``ctrness (N, 1, H, W)``.
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, *, num_cls_convs: int = 4,
                 num_box_convs: int = 4, num_share_convs: int = 0, norm: str = "GN", use_scale: bool = True,
                 use_deformable: bool = False, prior_prob: float = 0.01, norm_reg_targets: bool = True,
                 centerness_on_reg: bool = True) -> None:
        super().__init__()
        tower = dict(norm=norm, conv_bias=True, deformable_last=use_deformable)
        self.share_tower = build_dense_tower(in_channels, num_share_convs, **tower)
        self.cls_tower = build_dense_tower(in_channels, num_cls_convs, **tower)
        self.bbox_tower = build_dense_tower(in_channels, num_box_convs, **tower)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels)) if use_scale else None
        self.norm_reg_targets = norm_reg_targets
        self.centerness_on_reg = centerness_on_reg
        init_dense_head_convs(nn.ModuleList([self.cls_logits, self.bbox_pred, self.ctrness]))
        nn.init.constant_(self.cls_logits.bias, prior_prob_bias(prior_prob))

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        logits, bbox_reg, ctrness = [], [], []
        for level, x in enumerate(features):
            x = self.share_tower(x)
            cls_feat = self.cls_tower(x)
            box_feat = self.bbox_tower(x)
            logits.append(self.cls_logits(cls_feat))
            ctrness.append(self.ctrness(box_feat if self.centerness_on_reg else cls_feat))
            reg = self.bbox_pred(box_feat)
            if self.scales is not None:
                reg = self.scales[level](reg)
            reg = reg.float()
            bbox_reg.append(F.relu(reg) if self.norm_reg_targets else torch.exp(reg))
        return logits, bbox_reg, ctrness


class FCOSModule(nn.Module):
    """AdelaiDet's ``FCOS`` proposal generator: the head (key ``fcos_head``) plus its targets,
    losses and inference (AdelaiDet ``FCOSOutputs``); no parameters of its own.

    Raises:
        NotImplementedError / ValueError: unsupported ``MODEL.FCOS`` settings (named).
    """

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]) -> None:
        super().__init__()
        f = cfg.MODEL.FCOS
        if f.BOX_QUALITY != "ctrness":
            raise NotImplementedError(f"MODEL.FCOS.BOX_QUALITY {f.BOX_QUALITY!r}: only 'ctrness' is ported")
        if f.TOP_LEVELS != 2:
            raise NotImplementedError("MODEL.FCOS.TOP_LEVELS must be 2 (P6 and P7 from the FPN top block)")
        if not f.USE_RELU:
            raise NotImplementedError("MODEL.FCOS.USE_RELU False (towers without ReLU) is not ported")
        missing = [k for k in f.IN_FEATURES if k not in input_shape]
        if missing:
            raise ValueError(f"MODEL.FCOS.IN_FEATURES {missing} are not backbone outputs ({list(input_shape)})")
        shapes = [input_shape[k] for k in f.IN_FEATURES]
        if len({s.channels for s in shapes}) != 1:
            raise ValueError("MODEL.FCOS.IN_FEATURES must all have the same number of channels")
        self.in_features = list(f.IN_FEATURES)
        self.strides = [s.stride for s in shapes]
        if len(f.SIZES_OF_INTEREST) != len(self.strides) - 1:
            raise ValueError(
                f"MODEL.FCOS.SIZES_OF_INTEREST needs {len(self.strides) - 1} values for {len(self.strides)} levels, "
                f"got {list(f.SIZES_OF_INTEREST)}"
            )
        self.num_classes = f.NUM_CLASSES
        self.size_ranges = fcos_size_ranges(f.SIZES_OF_INTEREST)
        self.center_sampling_radius = f.POS_RADIUS if f.CENTER_SAMPLE else 0.0
        self.norm_reg_targets = f.NORM_REG_TARGETS
        self.loc_loss_type = f.LOC_LOSS_TYPE
        self.focal_alpha, self.focal_gamma = f.LOSS_ALPHA, f.LOSS_GAMMA
        self.thresh_with_ctr = f.THRESH_WITH_CTR
        self.nms_thresh = f.NMS_TH
        self.test_cfg = (f.INFERENCE_TH_TEST, f.PRE_NMS_TOPK_TEST, f.POST_NMS_TOPK_TEST)
        self.box2box = Box2BoxTransformLinear(normalize_by_size=f.NORM_REG_TARGETS)
        self.fcos_head = FCOSHead(
            shapes[0].channels, len(shapes), f.NUM_CLASSES, num_cls_convs=f.NUM_CLS_CONVS,
            num_box_convs=f.NUM_BOX_CONVS, num_share_convs=f.NUM_SHARE_CONVS, norm=f.NORM,
            use_scale=f.USE_SCALE, use_deformable=f.USE_DEFORMABLE, prior_prob=f.PRIOR_PROB,
            norm_reg_targets=f.NORM_REG_TARGETS, centerness_on_reg=f.CENTERNESS_ON_REG,
        )

    def locations(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level ``(H_l W_l, 2)`` cell centres ``(j*s + s//2, i*s + s//2)``."""
        return [compute_locations(x.shape[-2], x.shape[-1], s, 0.5, x.device) for x, s in zip(features, self.strides)]

    def reference_boxes(self, locations: List[torch.Tensor]) -> List[torch.Tensor]:
        """Stride-sized boxes centred at the locations: the ``Box2BoxTransformLinear`` references
        (their size scales stride-unit distances; with pixel distances only the centre is used)."""
        return [torch.cat((loc - s / 2.0, loc + s / 2.0), dim=1) for loc, s in zip(locations, self.strides)]

    def forward(self, features: Dict[str, torch.Tensor]):
        feats = [features[k] for k in self.in_features]
        return feats, self.fcos_head(feats)

    def losses(self, feats, outputs, gt: List[Instances]) -> Dict[str, torch.Tensor]:
        """AdelaiDet ``FCOSOutputs.fcos_losses``: focal / num_pos, centerness-weighted IoU loss /
        sum of centerness targets, centerness BCE / num_pos; normalisers all-reduced over processes."""
        logits, bbox_reg, ctrness = outputs
        k = self.num_classes
        device = logits[0].device
        gt_boxes, gt_classes, gt_valid = pad_gt_instances(gt, device, k, "MODEL.FCOS.NUM_CLASSES")
        labels, reg_targets, _ = fcos_targets(
            self.locations(feats), self.strides, self.size_ranges, gt_boxes, gt_classes, gt_valid, k,
            self.center_sampling_radius, self.norm_reg_targets,
        )
        logits_flat = torch.cat([permute_to_N_HWA_K(x, k) for x in logits], dim=1)  # (B, R, K)
        reg_flat = torch.cat([permute_to_N_HWA_K(x, 4) for x in bbox_reg], dim=1)  # (B, R, 4)
        ctr_flat = torch.cat([permute_to_N_HWA_K(x, 1) for x in ctrness], dim=1).squeeze(-1)  # (B, R)

        pos = labels != k
        num_pos = reduce_mean_across_processes(int(pos.sum()), device)
        class_target = torch.zeros_like(logits_flat, dtype=torch.float32)
        class_target[pos, labels[pos]] = 1.0
        loss_cls = sigmoid_focal_loss(logits_flat.float(), class_target, self.focal_alpha, self.focal_gamma,
                                      reduction="sum") / num_pos

        reg_pred, reg_tgt, ctr_pred = reg_flat[pos], reg_targets[pos], ctr_flat[pos].float()
        ctr_tgt = centerness_targets(reg_tgt)
        loss_denorm = reduce_mean_across_processes(float(ctr_tgt.sum()), device, min_value=1e-6)
        if reg_pred.shape[0] > 0:
            loss_reg = iou_loss(reg_pred, reg_tgt, ctr_tgt, self.loc_loss_type, smooth=True) / loss_denorm
            loss_ctr = F.binary_cross_entropy_with_logits(ctr_pred, ctr_tgt, reduction="sum") / num_pos
        else:
            loss_reg = reg_flat.sum() * 0
            loss_ctr = ctr_flat.sum() * 0
        return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": loss_reg, "loss_fcos_ctr": loss_ctr}

    def inference(self, feats, outputs, image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        """AdelaiDet ``FCOSOutputs.predict_proposals``: per level cls > 0.05 (before centerness), top
        1000 by cls*ctr, boxes decoded from the cell centres; NMS 0.6 over levels, 100 per image,
        score ``sqrt(cls * ctr)``."""
        logits, bbox_reg, ctrness = outputs
        thresh, pre_topk, post_topk = self.test_cfg
        refs = self.reference_boxes(self.locations(feats))
        k = self.num_classes
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores, th_scores = [], [], []
            for lg, rg, ct, ref in zip(logits, bbox_reg, ctrness, refs):
                cls = permute_to_N_HWA_K(lg[i:i + 1], k)[0].float().sigmoid()
                ctr = permute_to_N_HWA_K(ct[i:i + 1], 1)[0].float().sigmoid()
                reg = permute_to_N_HWA_K(rg[i:i + 1], 4)[0]
                boxes.append(self.box2box.apply_deltas(reg, ref))
                prod = cls * ctr
                scores.append(torch.sqrt(prod))
                th_scores.append(prod if self.thresh_with_ctr else cls)
            results.append(dense_detection_postprocess(
                boxes, scores, size, score_thresh=thresh, topk_candidates=pre_topk, nms_thresh=self.nms_thresh,
                max_detections=post_topk, threshold_scores=th_scores, topk_mode="pairs",
            ))
        return results


@META_ARCH_REGISTRY.register()
class FCOS(DenseDetector):
    """FCOS meta-architecture: ``backbone`` (ResNet-FPN P3-P7) + ``proposal_generator``
    (:class:`FCOSModule`). Losses ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``
    (AdelaiDet's names); see :class:`DenseDetector` for inputs and outputs.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.proposal_generator = FCOSModule(cfg, self.backbone.output_shape())
        self._setup_pixels(cfg)

    def losses(self, images: ImageList, features, gt):
        feats, outputs = self.proposal_generator(features)
        return self.proposal_generator.losses(feats, outputs, gt)

    def inference(self, images: ImageList, features):
        feats, outputs = self.proposal_generator(features)
        return self.proposal_generator.inference(feats, outputs, images.image_sizes)
