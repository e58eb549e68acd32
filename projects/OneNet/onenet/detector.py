"""OneNet meta-architecture (Sun et al., "OneNet: Towards End-to-End One-Stage Object Detection";
authors' ``projects/OneNet/onenet/detector.py``)."""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from common.assigners import MinCostMatcher
from common.layers import batched_nms
from common.losses import set_targets_from_instances, weighted_losses
from common.modeling import (
    META_ARCH_REGISTRY,
    build_backbone,
    detector_postprocess,
    normalize_and_pad,
    register_pixel_stats,
)
from common.structures import Boxes, ImageList, Instances

from .head import build_onenet_head
from .loss import SetCriterion

__all__ = ["OneNet"]

# Padding the CenterNet-style head needs: its deconv neck adds 2x-upsampled res5 to res4, res3,
# res2, so the input must be a multiple of the largest stride (32). The authors hard-code 32
# (``ImageList.from_tensors(images, 32)``; plain ResNet reports size_divisibility 0).
NECK_DIVISIBILITY = 32
# IoU threshold of the optional NMS ablation (MODEL.OneNet.NMS).
NMS_THRESH = 0.5


@META_ARCH_REGISTRY.register()
class OneNet(nn.Module):
    """Backbone + OneNet head (CenterNet-style stride-4 head, or FCOS / RetinaNet heads on FPN).

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` in ``INPUT.FORMAT``
    order, optional ``"height"``/``"width"`` (output size) and, in training, ``"instances"`` with
    ``gt_boxes`` (XYXY_ABS pixels of the resized image) and ``gt_classes`` (int64 in ``[0, K)``).

    Output: training -> dict of weighted scalar losses ``loss_ce`` (x ``CLASS_WEIGHT``),
    ``loss_bbox`` (x ``L1_WEIGHT``), ``loss_giou`` (x ``GIOU_WEIGHT``), plus ``*_stage{s}`` per
    extra stage with ``NUM_HEADS_TRAIN > 1``; inference -> one ``{"instances": Instances}`` per
    image with the top ``TEST.DETECTIONS_PER_IMAGE`` (location, class) pairs of stage 1 by sigmoid
    score: ``pred_boxes`` (XYXY_ABS, rescaled to ``height x width``), ``scores`` (descending),
    ``pred_classes``. No NMS, no max-pooling, no score threshold (``MODEL.OneNet.NMS`` True adds
    class-wise NMS at IoU 0.5, for the paper's Table 1 ablation only).

    Raises:
        ValueError / NotImplementedError: bad ``MODEL.OneNet`` settings (named in the message);
            ``TEST.AUG.ENABLED`` (no TTA for OneNet) or ``VIS_PERIOD > 0`` (not implemented), which
            would otherwise be silently ignored.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        on = cfg.MODEL.OneNet
        if on.PRE_DEFINE:
            raise NotImplementedError("MODEL.OneNet.PRE_DEFINE (fixed-location matching ablation) is not ported")
        if on.ACTIVATION != "relu":
            raise ValueError(f"MODEL.OneNet.ACTIVATION must be 'relu' (as the authors' heads), got {on.ACTIVATION!r}")
        if on.NUM_CLASSES < 1:
            raise ValueError(f"MODEL.OneNet.NUM_CLASSES must be >= 1, got {on.NUM_CLASSES}")
        if cfg.TEST.AUG.ENABLED:
            raise NotImplementedError(
                "TEST.AUG.ENABLED: OneNet has no test-time augmentation (the authors' code has none); "
                "set TEST.AUG.ENABLED False"
            )
        if cfg.VIS_PERIOD > 0:
            raise NotImplementedError(
                f"VIS_PERIOD={cfg.VIS_PERIOD}: training-time visualisation is not implemented; set VIS_PERIOD 0"
            )
        self.num_classes = on.NUM_CLASSES
        self.in_features = list(on.IN_FEATURES)
        self.num_detections = cfg.TEST.DETECTIONS_PER_IMAGE
        self.nms = on.NMS

        self.backbone = build_backbone(cfg)
        self.head = build_onenet_head(cfg, self.backbone.output_shape())
        # The backbone's requirement (FPN: 32, DLA/Hourglass: more), combined with the neck's.
        backbone_div = max(int(self.backbone.size_divisibility), 1)
        head_div = NECK_DIVISIBILITY if on.HEAD == "CenterNet" else 1
        self.size_divisibility = math.lcm(backbone_div, head_div)

        matcher = MinCostMatcher(
            cost_class=on.CLASS_COST, cost_bbox=on.L1_COST, cost_giou=on.GIOU_COST,
            alpha=on.ALPHA, gamma=on.GAMMA, mode=on.MATCHER_MODE,
        )
        weights = {"loss_ce": on.CLASS_WEIGHT, "loss_bbox": on.L1_WEIGHT, "loss_giou": on.GIOU_WEIGHT}
        weight_dict = dict(weights)
        for s in range(2, on.NUM_HEADS_TRAIN + 1):
            weight_dict.update({f"{k}_stage{s}": v for k, v in weights.items()})
        self.criterion = SetCriterion(self.num_classes, matcher, weight_dict, on.ALPHA, on.GAMMA)

        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalise each image and pad the batch (bottom/right, value 0) to a multiple of
        :attr:`size_divisibility` = lcm(``backbone.size_divisibility``, 32 for the CenterNet head's
        deconv neck): 32 for every config of the authors (their hard-coded value)."""
        return normalize_and_pad(self, batched_inputs, self.size_divisibility)

    def forward(self, batched_inputs: List[dict]):
        """See the class docstring."""
        images = self.preprocess_image(batched_inputs)
        feats = self.backbone(images.tensor)
        stages = self.head([feats[f] for f in self.in_features])

        if not self.training:
            results = self.inference(stages[0]["pred_logits"], stages[0]["pred_boxes"], images.image_sizes)
            processed = []
            for result, inputs, size in zip(results, batched_inputs, images.image_sizes):
                height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
                processed.append({"instances": detector_postprocess(result, height, width)})
            return processed

        if any("instances" not in x for x in batched_inputs):
            raise ValueError("OneNet in training mode needs 'instances' in every input dict (use the train mapper)")
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
        loss_dict = self.criterion(stages, targets)
        return weighted_losses(loss_dict, self.criterion.weight_dict)

    def prepare_targets(self, targets: List[Instances]) -> List[Dict[str, torch.Tensor]]:
        """GT ``Instances`` -> matcher/criterion dicts; see :func:`common.losses.set_targets_from_instances`.

        Raises:
            ValueError: a GT class outside ``[0, MODEL.OneNet.NUM_CLASSES)``.
        """
        return set_targets_from_instances(targets, self.num_classes, self.device, "MODEL.OneNet.NUM_CLASSES")

    def inference(
        self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Top-k (location, class) pairs by sigmoid score over all locations and classes.

        Args:
            logits: ``(B, N, K)``; boxes: ``(B, N, 4)`` XYXY_ABS in the network input frame;
            image_sizes: B ``(h, w)`` of the resized, unpadded inputs.

        Returns:
            B ``Instances`` with ``min(TEST.DETECTIONS_PER_IMAGE, N * K)`` detections each
            (fewer after the optional NMS), scores descending.
        """
        num_classes = logits.shape[-1]
        scores = logits.sigmoid().flatten(1)  # (B, N*K), index = location * K + class
        k = min(self.num_detections, scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1)
        labels = top_idx % num_classes
        top_boxes = boxes.gather(1, (top_idx // num_classes).unsqueeze(-1).expand(-1, -1, 4))
        results = []
        for s, l, b, size in zip(top_scores, labels, top_boxes, image_sizes):
            if self.nms:
                keep = batched_nms(b, s, l, NMS_THRESH)
                s, l, b = s[keep], l[keep], b[keep]
            inst = Instances(size)
            inst.pred_boxes = Boxes(b)
            inst.scores = s
            inst.pred_classes = l
            results.append(inst)
        return results
