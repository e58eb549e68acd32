"""AutoAssign (Zhu et al., "AutoAssign: Differentiable Label Assignment for Dense Object Detection",
arXiv 2007.03496) as the authors' code (Megvii-BaseDetection/AutoAssign
``auto_assign.res50.fpn.coco.800size.1x/auto_assign.py``, on cvpods).

Module names are the authors': a model built from ``autoassign.r50_fpn_1x.yaml`` has exactly the
keys and shapes of the released ``AutoAssign_Res50_FPN_1x`` state dict (``mu``, ``sigma``,
``backbone.bottom_up.*``, ``backbone.fpn_*``, ``backbone.top_block.p6`` from C5, ``head.*``), so the
cvpods checkpoint ``{"model": ...}`` loads as it is.

The head is the FCOS-style tower pair of :mod:`common.modeling.dense_head` with the implicit
objectness ("ImpObj") on the box tower instead of centerness; the assignment and the losses are
:func:`common.losses.autoassign.autoassign_losses`; inference is
:func:`common.modeling.dense_postprocess.dense_detection_postprocess`.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.config import configurable
from common.layers import ShapeSpec
from common.losses.autoassign import autoassign_losses
from common.modeling import (
    META_ARCH_REGISTRY,
    build_backbone,
    detector_postprocess,
    normalize_and_pad,
    register_pixel_stats,
)
from common.modeling.box_regression import Box2BoxTransformLinear
from common.modeling.dense_head import (
    Scale,
    build_dense_tower,
    compute_locations,
    init_dense_head_convs,
    pad_gt_instances,
    permute_to_N_HWA_K,
    prior_prob_bias,
)
from common.modeling.dense_postprocess import dense_detection_postprocess
from common.structures import ImageList, Instances

__all__ = ["AutoAssign", "AutoAssignHead"]


class AutoAssignHead(nn.Module):
    """Shared head over P3-P7 (authors' ``AutoAssignHead``).

    Keys: ``cls_subnet`` / ``bbox_subnet`` (``num_convs x [3x3 conv with bias -> GN(32) -> ReLU]``,
    :func:`common.modeling.dense_head.build_dense_tower`: ``{0,1,3,4,...}``), ``cls_score``
    (3x3 -> K), ``bbox_pred`` (3x3 -> 4), ``obj_score`` (3x3 -> 1, on the box tower),
    ``scales.{l}.scale`` ``(1,)``.

    Init (code): convs N(0, 0.01), bias 0; GN weight 1, bias 0; ``cls_score`` bias
    ``-log((1 - 0.02) / 0.02)``; ``bbox_pred`` bias 4.0.

    ``forward(features)`` -> per level ``cls_logits (N, K, H, W)``, ``bbox_reg (N, 4, H, W)`` float32
    ``(l, t, r, b)`` **pixels** (``ReLU(scale * x) * stride``, or ``exp(scale * x)`` with
    ``norm_reg_targets=False``), ``obj_logits (N, 1, H, W)``.
    """

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int, strides: Sequence[int], num_convs: int = 4,
                 norm: str = "GN", prior_prob: float = 0.02, bbox_pred_bias: float = 4.0,
                 norm_reg_targets: bool = True) -> None:
        super().__init__()
        self.cls_subnet = build_dense_tower(in_channels, num_convs, norm=norm, conv_bias=True)
        self.bbox_subnet = build_dense_tower(in_channels, num_convs, norm=norm, conv_bias=True)
        self.cls_score = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.obj_score = nn.Conv2d(in_channels, 1, 3, 1, 1)
        init_dense_head_convs(nn.ModuleList([self.cls_score, self.bbox_pred, self.obj_score]))
        nn.init.constant_(self.cls_score.bias, prior_prob_bias(prior_prob))
        nn.init.constant_(self.bbox_pred.bias, float(bbox_pred_bias))
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        self.strides = [int(s) for s in strides]
        self.norm_reg_targets = bool(norm_reg_targets)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> dict:
        a = cfg.MODEL.AUTOASSIGN
        if len({s.channels for s in input_shape}) != 1:
            raise ValueError("MODEL.AUTOASSIGN.IN_FEATURES must all have the same number of channels")
        return dict(in_channels=input_shape[0].channels, num_classes=a.NUM_CLASSES,
                    strides=[s.stride for s in input_shape], num_convs=a.NUM_CONVS, norm=a.NORM,
                    prior_prob=a.PRIOR_PROB, bbox_pred_bias=a.BBOX_PRED_BIAS, norm_reg_targets=a.NORM_REG_TARGETS)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        cls_logits, bbox_reg, obj_logits = [], [], []
        for x, stride, scale in zip(features, self.strides, self.scales):
            cls_feat = self.cls_subnet(x)
            box_feat = self.bbox_subnet(x)
            cls_logits.append(self.cls_score(cls_feat))
            obj_logits.append(self.obj_score(box_feat))
            reg = scale(self.bbox_pred(box_feat)).float()
            bbox_reg.append(F.relu(reg) * stride if self.norm_reg_targets else torch.exp(reg))
        return cls_logits, bbox_reg, obj_logits


@META_ARCH_REGISTRY.register()
class AutoAssign(nn.Module):
    """AutoAssign meta-architecture: ``mu``, ``sigma`` ``(K, 2)`` (centre prior, stride units; init
    0 and 1), ``backbone`` (ResNet-FPN P3-P7), ``head`` (:class:`AutoAssignHead`).

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` in ``INPUT.FORMAT``
    order (0-255), optional ``"height"``/``"width"`` and, in training, ``"instances"``
    (``gt_boxes`` XYXY_ABS pixels of the resized image, ``gt_classes``).

    Output: training -> ``{"loss_pos", "loss_neg", "loss_norm"}`` (the authors' names);
    inference -> one ``{"instances": Instances}`` per image with ``pred_boxes`` (XYXY_ABS at
    ``height x width``), ``scores`` (``P_cls * P_obj``) and ``pred_classes``.

    Raises:
        ValueError: a feature of ``MODEL.AUTOASSIGN.IN_FEATURES`` the backbone does not produce,
            training inputs without ``"instances"``, GT classes outside ``[0, NUM_CLASSES)``.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        a = cfg.MODEL.AUTOASSIGN
        self.num_classes = a.NUM_CLASSES
        self.mu = nn.Parameter(torch.zeros(a.NUM_CLASSES, 2))
        self.sigma = nn.Parameter(torch.ones(a.NUM_CLASSES, 2))
        self.backbone = build_backbone(cfg)
        shapes = self.backbone.output_shape()
        missing = [f for f in a.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.AUTOASSIGN.IN_FEATURES {missing} are not backbone outputs ({list(shapes)})")
        self.in_features = list(a.IN_FEATURES)
        feature_shapes = [shapes[f] for f in self.in_features]
        self.strides = [s.stride for s in feature_shapes]
        self.head = AutoAssignHead(cfg, feature_shapes)
        self.shift_offset = a.SHIFT_OFFSET
        self.box2box = Box2BoxTransformLinear(normalize_by_size=False)
        self.loss_cfg = dict(reg_weight=a.REG_WEIGHT, iou_loss_type=a.IOU_LOSS_TYPE, focal_alpha=a.FOCAL_LOSS_ALPHA,
                             focal_gamma=a.FOCAL_LOSS_GAMMA, temperature=a.POS_TEMPERATURE)
        self.test_cfg = dict(score_thresh=a.SCORE_THRESH_TEST, topk_candidates=a.TOPK_CANDIDATES_TEST,
                             nms_thresh=a.NMS_THRESH_TEST, max_detections=cfg.TEST.DETECTIONS_PER_IMAGE)
        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalise with ``MODEL.PIXEL_MEAN/STD`` and pad to the backbone's size divisibility."""
        return normalize_and_pad(self, batched_inputs, self.backbone.size_divisibility)

    def locations(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level ``(H_l W_l, 2)`` ``(j*s, i*s)`` (cvpods ``ShiftGenerator``, offset 0)."""
        return [compute_locations(x.shape[-2], x.shape[-1], s, self.shift_offset, x.device)
                for x, s in zip(features, self.strides)]

    def forward(self, batched_inputs: List[dict]):
        """See the class docstring."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        feats = [features[f] for f in self.in_features]
        outputs = self.head(feats)
        locations = self.locations(feats)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("AutoAssign in training mode needs 'instances' in every input dict")
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(locations, outputs, gt)
        results = self.inference(locations, outputs, images.image_sizes)
        processed = []
        for result, inputs, size in zip(results, batched_inputs, images.image_sizes):
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def losses(self, locations: List[torch.Tensor], outputs, gt: List[Instances]) -> Dict[str, torch.Tensor]:
        """:func:`common.losses.autoassign.autoassign_losses` on all levels, the GT count and the
        in-box centre-prior sum averaged over processes (the code's ``all_reduce``)."""
        cls_logits, bbox_reg, obj_logits = outputs
        k = self.num_classes
        device = cls_logits[0].device
        gt_boxes, gt_classes, gt_valid = pad_gt_instances(gt, device, k, "MODEL.AUTOASSIGN.NUM_CLASSES")
        locs = torch.cat(locations)
        strides = torch.cat([torch.full((len(l),), float(s), device=device) for l, s in zip(locations, self.strides)])
        cls_flat = torch.cat([permute_to_N_HWA_K(x, k) for x in cls_logits], dim=1)
        reg_flat = torch.cat([permute_to_N_HWA_K(x, 4) for x in bbox_reg], dim=1)
        obj_flat = torch.cat([permute_to_N_HWA_K(x, 1) for x in obj_logits], dim=1).squeeze(-1)
        return autoassign_losses(locs, strides, cls_flat, reg_flat, obj_flat, gt_boxes, gt_classes, gt_valid,
                                 self.mu, self.sigma, **self.loss_cfg)

    def inference(self, locations: List[torch.Tensor], outputs, image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        """Authors' ``inference_single_image``: per level the top-1000 (location, class) pairs by
        ``P_cls * P_obj``, then those > 0.05 (the same set as threshold-then-top-k), boxes decoded at
        the locations; class-aware NMS 0.6 over levels, 100 per image. No clipping before NMS (the
        code clips in ``detector_postprocess`` only); no square root on the score."""
        cls_logits, bbox_reg, obj_logits = outputs
        k = self.num_classes
        refs = [self.box2box.points_to_boxes(l) for l in locations]
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores = [], []
            for lg, rg, ob, ref in zip(cls_logits, bbox_reg, obj_logits, refs):
                cls = permute_to_N_HWA_K(lg[i:i + 1], k)[0].float().sigmoid()
                obj = permute_to_N_HWA_K(ob[i:i + 1], 1)[0].float().sigmoid()
                boxes.append(self.box2box.apply_deltas(permute_to_N_HWA_K(rg[i:i + 1], 4)[0], ref))
                scores.append(cls * obj)
            results.append(dense_detection_postprocess(boxes, scores, size, topk_mode="pairs", clip=False,
                                                       **self.test_cfg))
        return results
