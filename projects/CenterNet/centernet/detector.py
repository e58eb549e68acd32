"""CenterNet meta-architecture ("Objects as Points", Zhou et al. 2019; [XZ] xingyizhou/CenterNet
``src/lib/trains/ctdet.py``, ``src/lib/detectors/ctdet.py``)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.assigners import build_centernet_targets
from common.losses import clamped_sigmoid, gathered_l1_loss, heatmap_focal_loss
from common.modeling import META_ARCH_REGISTRY, build_backbone, detector_postprocess, register_pixel_stats
from common.structures import Boxes, Instances

from .decode import centernet_decode, soft_nms_gaussian
from .head import CenterNetHead

__all__ = ["CenterNet"]


@META_ARCH_REGISTRY.register()
class CenterNet(nn.Module):
    """Backbone (stride-4 map per supervised stack) + one :class:`CenterNetHead` per stack.

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` (uint8 or float, 0-255,
    ``INPUT.FORMAT`` order), optional ``"height"``/``"width"`` and, in training, ``"instances"``
    with ``gt_boxes`` (XYXY_ABS pixels of ``image``) and ``gt_classes`` (int64 in ``[0, NUM_CLASSES)``).

    Output: training -> ``{"loss_hm", "loss_wh", "loss_off"}`` (weighted; each the mean over the
    stacks of ``MODEL.CENTERNET.IN_FEATURES``); inference -> list of ``{"instances": Instances}``
    with ``TOPK`` detections (no score threshold; fewer after multi-scale soft-NMS) in
    ``height x width`` pixels: ``pred_boxes`` (XYXY_ABS), ``scores`` (descending), ``pred_classes``.

    Raises:
        ValueError: a feature of ``IN_FEATURES`` is missing from the backbone or its stride is
            not ``DOWN_RATIO``; pixel statistics of different lengths; training inputs without
            ``instances``.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        c = cfg.MODEL.CENTERNET
        self.num_classes = int(c.NUM_CLASSES)
        self.in_features = list(c.IN_FEATURES)
        self.down_ratio = int(c.DOWN_RATIO)
        self.backbone = build_backbone(cfg)
        shapes = self.backbone.output_shape()
        for f in self.in_features:
            if f not in shapes:
                raise ValueError(f"MODEL.CENTERNET.IN_FEATURES has {f!r}, the backbone outputs {sorted(shapes)}")
            if shapes[f].stride != self.down_ratio:
                raise ValueError(
                    f"MODEL.CENTERNET.DOWN_RATIO is {self.down_ratio} but backbone feature {f!r} has stride {shapes[f].stride}"
                )
        self.heads = nn.ModuleList([
            CenterNetHead(shapes[f].channels, self.num_classes, int(c.HEAD_CONV), float(c.PRIOR_BIAS))
            for f in self.in_features
        ])
        self.size_divisibility = max(int(self.backbone.size_divisibility), 1)
        self.radius_variant = c.GAUSSIAN_RADIUS_VARIANT
        self.min_overlap = float(c.MIN_OVERLAP)
        self.weights = {"loss_hm": float(c.HM_WEIGHT), "loss_wh": float(c.WH_WEIGHT), "loss_off": float(c.OFF_WEIGHT)}
        self.focal_alpha, self.focal_beta = float(c.FOCAL_ALPHA), float(c.FOCAL_BETA)
        self.topk = int(c.TOPK)
        self.flip_test = bool(c.FLIP_TEST)
        self.test_scales = [float(s) for s in c.TEST_SCALES]
        if not self.test_scales or min(self.test_scales) <= 0:
            raise ValueError(f"MODEL.CENTERNET.TEST_SCALES must be positive, got {list(c.TEST_SCALES)}")
        self.use_soft_nms = bool(c.NMS) or len(self.test_scales) > 1
        self.soft_nms_sigma = float(c.SOFT_NMS_SIGMA)
        self.soft_nms_thresh = float(c.SOFT_NMS_SCORE_THRESH)
        self.pad_centered = bool(c.TEST_PAD_CENTERED)

        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------
    def _batch(self, images: List[torch.Tensor], centered: bool) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise and pad raw ``(3, h, w)`` images into one ``(N, 3, Hp, Wp)`` tensor.

        The padding is black in pixel space (``-mean / std`` after normalisation), as the authors'
        ``warpAffine`` border. ``Hp = (max h | (d - 1)) + 1`` with ``d`` = size divisibility when
        ``centered`` (the authors' test padding; the image is centred), else the next multiple of
        ``d`` with the image at the top-left. Returns the tensor and per-image ``(top, left)`` offsets.
        """
        d = self.size_divisibility
        max_h = max(int(im.shape[1]) for im in images)
        max_w = max(int(im.shape[2]) for im in images)
        if centered:
            hp, wp = (max_h | (d - 1)) + 1, (max_w | (d - 1)) + 1
        else:
            hp, wp = -(-max_h // d) * d, -(-max_w // d) * d
        batch = ((-self.pixel_mean / self.pixel_std).view(1, -1, 1, 1)
                 .expand(len(images), -1, hp, wp).clone())
        offsets = []
        for i, im in enumerate(images):
            h, w = int(im.shape[1]), int(im.shape[2])
            top, left = ((hp - h) // 2, (wp - w) // 2) if centered else (0, 0)
            batch[i, :, top:top + h, left:left + w] = (im.to(self.device).float() - self.pixel_mean) / self.pixel_std
            offsets.append((top, left))
        return batch, offsets

    def forward(self, batched_inputs: List[dict]):
        """See the class docstring."""
        if not self.training:
            return self.inference(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("CenterNet in training mode needs 'instances' in every input dict (use the train mapper)")
        images, _ = self._batch([x["image"] for x in batched_inputs], centered=False)
        feats = self.backbone(images)
        outputs = [head(feats[f]) for head, f in zip(self.heads, self.in_features)]
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs],
                                       tuple(outputs[0]["hm"].shape[-2:]))
        return self.losses(outputs, targets)

    def prepare_targets(self, instances: List[Instances], output_size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        """Per-image :func:`~common.assigners.build_centernet_targets`, batched.

        Returns ``heatmap (B, C, Ho, Wo)``, ``wh``/``offset`` ``(K, 2)``, ``index``/``batch_index`` ``(K,)``
        for the K objects of the batch.
        """
        heatmaps, wh, off, idx, bidx = [], [], [], [], []
        for b, inst in enumerate(instances):
            t = build_centernet_targets(inst.gt_boxes.tensor, inst.gt_classes, self.num_classes, output_size,
                                        self.down_ratio, self.min_overlap, self.radius_variant)
            heatmaps.append(t["heatmap"])
            wh.append(t["wh"])
            off.append(t["offset"])
            idx.append(t["index"])
            bidx.append(torch.full_like(t["index"], b))
        return {"heatmap": torch.stack(heatmaps), "wh": torch.cat(wh), "offset": torch.cat(off),
                "index": torch.cat(idx), "batch_index": torch.cat(bidx)}

    def losses(self, outputs: List[Dict[str, torch.Tensor]], targets: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Focal heatmap loss + 0.1 L1 size + 1 L1 offset, each averaged over the stacks (paper Eq. 4)."""
        n = len(outputs)
        loss = {k: outputs[0]["hm"].new_zeros(()) for k in self.weights}
        for out in outputs:
            loss["loss_hm"] = loss["loss_hm"] + heatmap_focal_loss(
                clamped_sigmoid(out["hm"].float()), targets["heatmap"], self.focal_alpha, self.focal_beta) / n
            loss["loss_wh"] = loss["loss_wh"] + gathered_l1_loss(
                out["wh"].float(), targets["batch_index"], targets["index"], targets["wh"]) / n
            loss["loss_off"] = loss["loss_off"] + gathered_l1_loss(
                out["reg"].float(), targets["batch_index"], targets["index"], targets["offset"]) / n
        return {k: v * self.weights[k] for k, v in loss.items()}

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_scale(self, images: List[torch.Tensor], scale: float):
        """Detections of one test scale in each image's (resized) input frame: lists of
        ``(k, 4)`` boxes, ``(k,)`` scores, ``(k,)`` classes."""
        if scale != 1.0:
            images = [
                F.interpolate(im.to(self.device).float()[None], size=(int(im.shape[1] * scale), int(im.shape[2] * scale)),
                              mode="bilinear", align_corners=False)[0]
                for im in images
            ]
        batch, offsets = self._batch(images, centered=self.pad_centered)
        n = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        feat = self.backbone(batch)[self.in_features[-1]]
        out = self.heads[-1](feat)
        hm, wh, reg = out["hm"].sigmoid(), out["wh"], out["reg"]
        if self.flip_test:
            hm = (hm[:n] + hm[n:].flip(-1)) / 2
            wh = (wh[:n] + wh[n:].flip(-1)) / 2
            reg = reg[:n]
        boxes, scores, classes = centernet_decode(hm, wh, reg, self.topk)
        results = []
        for b in range(n):
            top, left = offsets[b]
            shift = boxes.new_tensor([left, top, left, top])
            results.append(((boxes[b] * self.down_ratio - shift) / scale, scores[b], classes[b]))
        return results

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, Instances]]:
        """Decode, merge scales (soft-NMS + top-K when several), rescale to ``height x width``."""
        images = [x["image"] for x in batched_inputs]
        per_scale = [self._run_scale(images, s) for s in self.test_scales]
        processed = []
        for i, inputs in enumerate(batched_inputs):
            boxes = torch.cat([r[i][0] for r in per_scale])
            scores = torch.cat([r[i][1] for r in per_scale])
            classes = torch.cat([r[i][2] for r in per_scale])
            if self.use_soft_nms:
                keep, new_scores = soft_nms_gaussian(boxes, scores, classes, self.soft_nms_sigma, self.soft_nms_thresh)
                boxes, scores, classes = boxes[keep], new_scores, classes[keep]
                order = scores.argsort(descending=True)[: self.topk]
                boxes, scores, classes = boxes[order], scores[order], classes[order]
            h, w = int(images[i].shape[1]), int(images[i].shape[2])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_classes = classes
            processed.append({"instances": detector_postprocess(inst, inputs.get("height", h), inputs.get("width", w))})
        return processed
