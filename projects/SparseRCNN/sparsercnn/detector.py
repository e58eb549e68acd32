"""Sparse R-CNN meta-architecture (Sun et al., "Sparse R-CNN: End-to-End Object Detection with
Learnable Proposals", CVPR 2021; authors' ``projects/SparseRCNN/sparsercnn/detector.py``)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn
from torchvision.ops import box_convert

from common.assigners import HungarianMatcher
from common.losses import set_targets_from_instances, weighted_losses
from common.modeling import META_ARCH_REGISTRY, build_backbone, detector_postprocess, register_pixel_stats
from common.structures import Boxes, ImageList, Instances

from .head import DynamicHead
from .loss import SetCriterion

__all__ = ["SparseRCNN"]


@META_ARCH_REGISTRY.register()
class SparseRCNN(nn.Module):
    """Backbone (ResNet-FPN) + ``NUM_PROPOSALS`` learned boxes/features + ``DynamicHead``.

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` uint8/float tensor in
    ``INPUT.FORMAT`` channel order, optional ``"height"``/``"width"`` (output resolution) and,
    in training, ``"instances"`` with ``gt_boxes`` (XYXY_ABS in the resized image) and
    ``gt_classes`` (int64 in ``[0, NUM_CLASSES)``).

    Output: training -> dict of weighted scalar losses (3 keys + 3 per auxiliary stage, i.e. 18
    with 6 stages and deep supervision); inference -> list of ``{"instances": Instances}`` with
    exactly ``NUM_PROPOSALS`` detections per image (no NMS, no score threshold) rescaled to
    ``height x width``: ``pred_boxes`` (Boxes, XYXY_ABS), ``scores`` (sorted descending),
    ``pred_classes``.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        sr = cfg.MODEL.SparseRCNN
        self.in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        self.num_classes = sr.NUM_CLASSES
        self.num_proposals = sr.NUM_PROPOSALS
        self.hidden_dim = sr.HIDDEN_DIM
        self.num_heads = sr.NUM_HEADS
        self.deep_supervision = sr.DEEP_SUPERVISION
        self.use_focal = sr.USE_FOCAL
        if cfg.VIS_PERIOD > 0:
            raise NotImplementedError(
                f"VIS_PERIOD={cfg.VIS_PERIOD}: training-time visualisation is not implemented; set VIS_PERIOD 0"
            )
        if self.num_proposals < 1 or self.num_classes < 1:
            raise ValueError(
                f"MODEL.SparseRCNN.NUM_PROPOSALS ({self.num_proposals}) and NUM_CLASSES "
                f"({self.num_classes}) must be >= 1"
            )

        self.backbone = build_backbone(cfg)
        self.size_divisibility = self.backbone.size_divisibility

        # Learned proposals (paper Sec. 3.2): boxes are normalised (cx, cy, w, h), initially the
        # whole image; features keep nn.Embedding's N(0, 1) init.
        self.init_proposal_features = nn.Embedding(self.num_proposals, self.hidden_dim)
        self.init_proposal_boxes = nn.Embedding(self.num_proposals, 4)
        nn.init.constant_(self.init_proposal_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.init_proposal_boxes.weight[:, 2:], 1.0)

        self.head = DynamicHead(cfg, self.backbone.output_shape())

        weight_dict = {"loss_ce": sr.CLASS_WEIGHT, "loss_bbox": sr.L1_WEIGHT, "loss_giou": sr.GIOU_WEIGHT}
        if self.deep_supervision:
            weight_dict.update({f"{k}_{i}": v for i in range(self.num_heads - 1) for k, v in list(weight_dict.items())})
        matcher = HungarianMatcher(
            cost_class=sr.CLASS_WEIGHT,
            cost_bbox=sr.L1_WEIGHT,
            cost_giou=sr.GIOU_WEIGHT,
            alpha=sr.ALPHA,
            gamma=sr.GAMMA,
            use_focal=self.use_focal,
        )
        self.criterion = SetCriterion(
            num_classes=self.num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=sr.NO_OBJECT_WEIGHT,
            use_focal=self.use_focal,
            focal_alpha=sr.ALPHA,
            focal_gamma=sr.GAMMA,
        )

        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> Tuple[ImageList, torch.Tensor]:
        """Normalise, pad to ``backbone.size_divisibility``; returns the ImageList and ``(N, 4)``
        per-image ``[w, h, w, h]`` of the resized, unpadded images."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        whwh = torch.tensor(
            [[w, h, w, h] for h, w in images.image_sizes], dtype=torch.float32, device=self.device
        )
        return images, whwh

    def forward(self, batched_inputs: List[dict], do_postprocess: bool = True):
        """See the class docstring. In inference, ``do_postprocess=False`` returns the raw
        ``Instances`` (boxes in the resized network-input frame, not rescaled to ``height x width``),
        as detectron2's meta-architectures do for test-time augmentation."""
        images, images_whwh = self.preprocess_image(batched_inputs)
        src = self.backbone(images.tensor)
        features = [src[f] for f in self.in_features]

        proposal_boxes = box_convert(self.init_proposal_boxes.weight, "cxcywh", "xyxy")
        proposal_boxes = proposal_boxes.unsqueeze(0) * images_whwh.unsqueeze(1)  # (N, nr, 4) XYXY_ABS
        outputs_class, outputs_coord = self.head(features, proposal_boxes, self.init_proposal_features.weight)

        if not self.training:
            results = self.inference(outputs_class[-1], outputs_coord[-1], images.image_sizes)
            if not do_postprocess:
                return results
            processed = []
            for result, inputs, image_size in zip(results, batched_inputs, images.image_sizes):
                height = inputs.get("height", image_size[0])
                width = inputs.get("width", image_size[1])
                processed.append({"instances": detector_postprocess(result, height, width)})
            return processed

        if any("instances" not in x for x in batched_inputs):
            raise ValueError("SparseRCNN in training mode needs 'instances' in every input dict (use the train mapper)")
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
        output = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
        if self.deep_supervision:
            output["aux_outputs"] = [
                {"pred_logits": c, "pred_boxes": b} for c, b in zip(outputs_class[:-1], outputs_coord[:-1])
            ]
        loss_dict = self.criterion(output, targets)
        return weighted_losses(loss_dict, self.criterion.weight_dict)

    def prepare_targets(self, targets: List[Instances]) -> List[Dict[str, torch.Tensor]]:
        """GT ``Instances`` -> matcher/criterion dicts; see :func:`common.losses.set_targets_from_instances`.

        Raises:
            ValueError: a GT class outside ``[0, MODEL.SparseRCNN.NUM_CLASSES)``.
        """
        return set_targets_from_instances(targets, self.num_classes, self.device, "MODEL.SparseRCNN.NUM_CLASSES")

    def inference(
        self, box_cls: torch.Tensor, box_pred: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Top-``NUM_PROPOSALS`` (proposal, class) pairs per image, no NMS.

        Args:
            box_cls: ``(N, nr, K)`` logits (``K + 1`` with softmax, last = no object).
            box_pred: ``(N, nr, 4)`` XYXY_ABS boxes in the network input frame.
            image_sizes: N ``(h, w)`` of the resized, unpadded inputs.

        Returns:
            N ``Instances`` with ``pred_boxes``, ``scores`` (descending), ``pred_classes``.
        """
        if self.use_focal:
            num_classes = box_cls.shape[-1]
            scores, flat_idx = box_cls.sigmoid().flatten(1).topk(self.num_proposals, dim=1)  # (N, nr)
            labels = flat_idx % num_classes
            boxes = box_pred.gather(1, (flat_idx // num_classes).unsqueeze(-1).expand(-1, -1, 4))
        else:
            scores, labels = box_cls.softmax(-1)[..., :-1].max(-1)
            boxes = box_pred
        results = []
        for s, l, b, size in zip(scores, labels, boxes, image_sizes):
            inst = Instances(size)
            inst.pred_boxes = Boxes(b)
            inst.scores = s
            inst.pred_classes = l
            results.append(inst)
        return results
