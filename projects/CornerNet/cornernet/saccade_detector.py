"""CornerNet-Saccade meta-architecture (CornerNet-Lite, Law et al. 2019, Sec. 3).

Sources: princeton-vl/CornerNet-Lite ``core/models/CornerNet_Saccade.py`` (model),
``core/models/py_utils/modules.py`` (``saccade_net``), ``core/models/py_utils/losses.py``
(``CornerNet_Saccade_Loss``), ``core/sample/cornernet_saccade.py`` (targets),
``core/test/cornernet_saccade.py`` (inference), ``configs/CornerNet_Saccade.json``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from common.losses import clamped_sigmoid, heatmap_focal_loss
from common.modeling import META_ARCH_REGISTRY
from common.structures import Instances

from .decode import cornernet_decode, heatmap_peaks
from .detector import CornerNet
from .head import prediction_layer
from .saccade import (attention_locations, attention_targets, crop_and_resize, location_nms, reference_locations,
                      remap_boxes)
from .targets import build_corner_targets

__all__ = ["CornerNetSaccade"]


@META_ARCH_REGISTRY.register()
class CornerNetSaccade(CornerNet):
    """CornerNet (corner pooling + heads per stack) plus, per stack, one attention head per map
    (``attention_heads[s][j]``: 3x3 conv + ReLU + 1x1 conv to 1 channel, bias ``PRIOR_BIAS``) on
    the hourglass merge output of level ``ATT_LEVELS[j]`` (Hourglass-54: 384 channels at 16x16,
    384 at 32x32, 256 at 64x64 for a 255 input; ``MODEL.HOURGLASS.OUT_MERGES True``).

    Training: the inputs are ``INPUT.CORNERNET.TRAIN_SIZE`` crops of
    :class:`~.saccade_mapper.CornerNetSaccadeDatasetMapper`, whose ``instances`` carry
    ``gt_ignore``. Objects not ignored are the corner positives; ignored ones mask the corner
    focal losses around their corners (``tl_valid``/``br_valid``); every object marks its centre
    on the attention map of its size (:func:`~.saccade.attention_targets`). Losses: CornerNet's
    (each summed over the stacks / stacks) and ``loss_attention`` = focal (alpha 2, beta 4) of
    every map of every stack, summed, divided by the number of stacks twice (the authors divide
    the attention term by the stacks inside a loss that is divided by them again), times
    ``ATT_WEIGHT``.

    Inference (:meth:`saccade_inference`, one image at a time, its crops in one batch): see the
    method docstring. Output: ``{"instances": Instances}`` with ``pred_boxes`` XYXY_ABS in
    ``height x width`` pixels, ``scores``, ``pred_classes``; at most ``MAX_PER_IMAGE``.

    Raises:
        ValueError: the backbone lacks the merge outputs (``MODEL.HOURGLASS.OUT_MERGES``),
            ``ATT_LEVELS``/``ATT_RANGES``/``ATT_SCALES``/``ATT_THRESHOLDS`` lengths disagree, or
            CornerNet's flip / multi-scale / merge test options are set.
    """

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if self.flip_test or self.merge_bbox or self.test_scales != [1.0]:
            raise ValueError("CornerNetSaccade tests by saccades ([CNL] test/cornernet_saccade.py: no flip, one "
                             "scale, plain soft-NMS): set MODEL.CORNERNET.FLIP_TEST False, MERGE_BBOX False and "
                             f"TEST_SCALES (1.0,), got {self.flip_test}, {self.merge_bbox}, {self.test_scales}")
        s = cfg.MODEL.CORNERNET.SACCADE
        shapes = self.backbone.output_shape()
        self.att_levels = [int(v) for v in s.ATT_LEVELS]
        self.att_features = [[f"{f}_merge{lvl}" for lvl in self.att_levels] for f in self.in_features]
        missing = [n for names in self.att_features for n in names if n not in shapes]
        if missing:
            raise ValueError(f"CornerNetSaccade needs the hourglass merge outputs {missing} (MODEL.HOURGLASS.OUT_MERGES "
                             f"True, MODEL.CORNERNET.SACCADE.ATT_LEVELS {self.att_levels} below the hourglass depth); "
                             f"the backbone outputs {sorted(shapes)}")
        self.att_ranges = [tuple(float(v) for v in r) for r in s.ATT_RANGES]
        if len(self.att_ranges) != len(self.att_levels):
            raise ValueError(f"MODEL.CORNERNET.SACCADE.ATT_RANGES has {len(self.att_ranges)} entries, ATT_LEVELS "
                             f"{len(self.att_levels)}")
        self.att_strides = [int(shapes[n].stride) for n in self.att_features[-1]]
        c = cfg.MODEL.CORNERNET
        self.attention_heads = nn.ModuleList([
            nn.ModuleList([prediction_layer(shapes[n].channels, int(c.HEAD_CONV), 1, 3) for n in names])
            for names in self.att_features
        ])
        for heads in self.attention_heads:
            for layer in heads:
                nn.init.constant_(layer[-1].bias, float(c.PRIOR_BIAS))
        self.att_weight = float(s.ATT_WEIGHT)
        self.input_size = tuple(int(v) for v in cfg.INPUT.CORNERNET.TRAIN_SIZE)
        self.init_sizes = [float(v) for v in s.INIT_SIZES]
        self.att_thresholds = [float(v) for v in s.ATT_THRESHOLDS]
        self.att_scales = [[float(v) for v in row] for row in s.ATT_SCALES]
        if len(self.att_scales) != len(self.att_thresholds) or any(len(r) != len(self.att_levels)
                                                                   for r in self.att_scales):
            raise ValueError(f"MODEL.CORNERNET.SACCADE.ATT_SCALES {self.att_scales} needs one row of "
                             f"{len(self.att_levels)} zooms per entry of ATT_THRESHOLDS {self.att_thresholds}")
        if not self.init_sizes or min(self.init_sizes) <= 0:
            raise ValueError(f"MODEL.CORNERNET.SACCADE.INIT_SIZES must be positive, got {self.init_sizes}")
        self.att_max_crops = int(s.ATT_MAX_CROPS)
        self.att_nms_kernel = int(s.ATT_NMS_KERNEL)
        self.max_source_scale = float(s.MAX_SOURCE_SCALE)
        self.max_crop_scale = float(s.MAX_CROP_SCALE)
        self.ref_dets = bool(s.REF_DETS)
        self.ref_score_thresh = float(s.REF_SCORE_THRESH)
        self.ref_sizes = [tuple(float(v) for v in r) for r in s.REF_SIZES]
        self.init_score_thresh = float(s.INIT_SCORE_THRESH)
        self.location_nms_dist = float(s.LOCATION_NMS_DIST)
        self.location_nms_ratio = tuple(float(v) for v in s.LOCATION_NMS_SCALE_RATIO)

    # ------------------------------------------------------------------------------------------
    def forward(self, batched_inputs: List[dict]):
        """See the class docstring."""
        if not self.training:
            return self.inference(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("CornerNetSaccade in training mode needs 'instances' in every input dict "
                             "(use CornerNetSaccadeDatasetMapper)")
        sizes = {tuple(x["image"].shape[-2:]) for x in batched_inputs}
        if len(sizes) != 1:
            raise ValueError(f"CornerNetSaccade trains on crops of one size (INPUT.CORNERNET.TRAIN_SIZE), got {sorted(sizes)}")
        images = torch.stack([self._normalize(x["image"]) for x in batched_inputs])
        feats = self.backbone(images)
        outputs = []
        for s, f in enumerate(self.in_features):
            out = self.heads(feats[f], s)
            out["att"] = [head(feats[n]) for head, n in zip(self.attention_heads[s], self.att_features[s])]
            outputs.append(out)
        instances = [x["instances"].to(self.device) for x in batched_inputs]
        targets = self.prepare_saccade_targets(instances, tuple(images.shape[-2:]),
                                               tuple(outputs[0]["tl_heat"].shape[-2:]),
                                               [tuple(a.shape[-2:]) for a in outputs[0]["att"]])
        losses = self.losses(outputs, targets)
        n = len(outputs)
        with torch.autocast(images.device.type, enabled=False):
            att = sum(heatmap_focal_loss(clamped_sigmoid(pred), targets["att"][j], self.focal_alpha, self.focal_beta)
                      for out in outputs for j, pred in enumerate(out["att"]))
        losses["loss_attention"] = att / (n * n) * self.att_weight
        return losses

    def prepare_saccade_targets(self, instances: List[Instances], input_size: Tuple[int, int],
                                output_size: Tuple[int, int], att_sizes: List[Tuple[int, int]]
                                ) -> Dict[str, torch.Tensor]:
        """:meth:`CornerNet.prepare_targets` of the objects not ignored, plus ``tl_valid``/``br_valid``
        ``(B, C, Ho, Wo)`` (0 within the corner Gaussians of the ignored objects, [CNL]
        ``tl_valids``) and ``att``: per map ``(B, 1, h_j, w_j)`` (:func:`~.saccade.attention_targets`
        of every object)."""
        def ignored(inst):
            if inst.has("gt_ignore"):
                return inst.gt_ignore.to(torch.bool)
            return torch.zeros(len(inst), dtype=torch.bool, device=inst.gt_classes.device)

        flags = [ignored(inst) for inst in instances]
        targets = self.prepare_targets([inst[~f] for inst, f in zip(instances, flags)], input_size, output_size)
        for kind in ("tl", "br"):
            targets[f"{kind}_valid"] = torch.stack([
                (build_corner_targets(inst.gt_boxes.tensor[f], inst.gt_classes[f], self.num_classes, input_size,
                                      output_size, self.min_overlap, self.radius_variant)[f"{kind}_heatmap"] == 0)
                .float() for inst, f in zip(instances, flags)])
        per_image = [attention_targets(inst.gt_boxes.tensor, att_sizes, self.att_strides, self.att_ranges)
                     for inst in instances]
        targets["att"] = [torch.stack([maps[j] for maps in per_image]) for j in range(len(att_sizes))]
        return targets

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_inputs(self, crops: torch.Tensor, with_attention: bool):
        """Detector (last stack) on normalised inputs ``(n, 3, H_in, W_in)``: decoded boxes in input
        pixels ``(n, D, 4)``, ``scores``/``classes`` ``(n, D)``, and the peak-filtered attention
        probabilities (per map ``(n, 1, h_j, w_j)``) when ``with_attention``."""
        feats = self.backbone(crops)
        s = len(self.in_features) - 1
        out = self.heads(feats[self.in_features[s]], s)
        att_logits = ([head(feats[n]) for head, n in zip(self.attention_heads[s], self.att_features[s])]
                      if with_attention else None)
        with torch.autocast(crops.device.type, enabled=False):
            dets = cornernet_decode(out["tl_heat"].float().sigmoid(), out["br_heat"].float().sigmoid(),
                                    out["tl_tag"].float(), out["br_tag"].float(), out["tl_off"].float(),
                                    out["br_off"].float(), self.topk, self.ae_threshold, self.nms_kernel,
                                    self.num_dets, no_border=True)
            out_h, out_w = out["tl_heat"].shape[-2:]
            ratio = dets["boxes"].new_tensor([out_w / crops.shape[-1], out_h / crops.shape[-2]] * 2)
            dets["boxes"] = dets["boxes"] / ratio
            atts = None
            if att_logits is not None:
                atts = [heatmap_peaks(a.float().sigmoid(), self.att_nms_kernel) for a in att_logits]
        return dets, atts

    def _detect(self, image: torch.Tensor, locations: torch.Tensor, with_attention: bool):
        crops, offsets = crop_and_resize(image, locations, self.input_size)
        crops = (crops - self.pixel_mean) / self.pixel_std
        dets, atts = self._run_inputs(crops, with_attention)
        scales = locations[:, 2]
        boxes = remap_boxes(dets["boxes"], scales, offsets)
        return boxes.flatten(0, 1), dets["scores"].flatten(), dets["classes"].flatten(), atts, scales, offsets

    @torch.no_grad()
    def saccade_inference(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict]:
        """Detections of one ``(3, H, W)`` image (0-255, ``INPUT.FORMAT``) by saccades
        ([CNL] ``cornernet_saccade_inference``):

        1. The image downsized to longest side ``INIT_SIZES`` (192, 255), centred in
           ``TRAIN_SIZE`` inputs (:func:`~.saccade.crop_and_resize` at zoom ``size / max(H, W)``),
           goes through the detector (``no_border`` decoding, ``TOPK``/``NUM_DETS`` 12) and the
           attention heads (sigmoid, ``ATT_NMS_KERNEL`` peaks); its detections above
           ``INIT_SCORE_THRESH`` are kept.
        2. Crop locations: attention cells above ``ATT_THRESHOLDS[0]`` at zoom
           ``ATT_SCALES[0][j] x`` the input's (:func:`~.saccade.attention_locations`), plus, with
           ``REF_DETS``, the detections above ``REF_SCORE_THRESH`` (:func:`~.saccade.reference_locations`),
           merged by :func:`~.saccade.location_nms`.
        3. For each entry of ``ATT_THRESHOLDS``: the best locations (at most ``ATT_MAX_CROPS`` crops
           in all) are cropped, zoomed and run as one batch; their boxes are mapped back
           (:func:`~.saccade.remap_boxes`) and pairs not rejected (score > -1) kept; before a
           further round the crops' attention (``ignore_same``) and detections give the next locations.
        4. Per-class Gaussian soft-NMS (``SOFT_NMS_SIGMA`` 0.7, score threshold 0.001, +1 IoU) of all
           detections, then the ``MAX_PER_IMAGE`` best.

        Returns:
            ``boxes (N, 4)`` XYXY_ABS pixels of ``image``, ``scores (N,)`` descending,
            ``classes (N,)`` int64, and ``info`` (``num_crops``, ``locations (L, 4)``).
        """
        img = image.to(self.device).float()
        H, W = int(img.shape[1]), int(img.shape[2])
        init = torch.tensor([[H // 2, W // 2, size / max(H, W)] for size in self.init_sizes],
                            dtype=torch.float32, device=self.device)
        boxes, scores, classes, atts, scales, offsets = self._detect(img, init, True)
        keep = scores > self.init_score_thresh
        all_boxes, all_scores, all_classes = [boxes[keep]], [scores[keep]], [classes[keep]]
        locations = attention_locations(atts, self.att_strides, self.att_scales[0], scales, offsets, (H, W),
                                        self.att_thresholds[0], False, self.max_source_scale, self.max_crop_scale)
        if self.ref_dets:
            locations = torch.cat([locations, reference_locations(boxes[keep], scores[keep], self.ref_score_thresh,
                                                                  self.ref_sizes)])
            locations = location_nms(locations, self.location_nms_dist, self.location_nms_ratio)
        taken: List[torch.Tensor] = []
        num_crops = 0
        rounds = len(self.att_thresholds)
        for r in range(1, rounds + 1):
            if locations.shape[0] == 0 or num_crops >= self.att_max_crops:
                break
            locations = locations[: self.att_max_crops - num_crops]
            num_crops += locations.shape[0]
            taken.append(locations)
            last = r == rounds
            boxes, scores, classes, atts, scales, offsets = self._detect(img, locations, not last)
            keep = scores > -1
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_classes.append(classes[keep])
            if last or num_crops >= self.att_max_crops:
                break
            locations = attention_locations(atts, self.att_strides, self.att_scales[r], scales, offsets, (H, W),
                                            self.att_thresholds[r], True, self.max_source_scale, self.max_crop_scale)
            if self.ref_dets:
                locations = torch.cat([locations, reference_locations(boxes[keep], scores[keep],
                                                                      self.ref_score_thresh, self.ref_sizes)])
                locations = location_nms(locations, self.location_nms_dist, self.location_nms_ratio)
        boxes, scores, classes = self._postprocess({"boxes": torch.cat(all_boxes), "scores": torch.cat(all_scores),
                                                    "classes": torch.cat(all_classes)})
        info = {"num_crops": num_crops,
                "locations": torch.cat(taken) if taken else init.new_zeros((0, 4), dtype=torch.float64)}
        return boxes, scores, classes, info

    def detect_image(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`saccade_inference` without its ``info`` (used by :meth:`CornerNet.inference`)."""
        return self.saccade_inference(image)[:3]
