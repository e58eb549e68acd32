"""CornerNet and CenterNet: Keypoint Triplets meta-architectures.

Sources: CornerNet (Law & Deng 2018) Secs. 3-4, princeton-vl/CornerNet ``models/py_utils/kp.py``
(``kp``, ``AELoss``), ``test/coco.py`` (``kp_decode``, ``kp_detection``); CornerNet-Lite
``core/test/cornernet.py``; CenterNet-Triplets (Duan et al. 2019) Sec. 3, Duankaiwen/CenterNet
``models/py_utils/kp.py``, ``test/coco.py``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from common.modeling import META_ARCH_REGISTRY, build_backbone, detector_postprocess, register_pixel_stats
from common.ops import soft_nms, soft_nms_merge
from common.structures import Boxes, Instances

from .decode import central_region_rescore, cornernet_decode, heatmap_peaks, topk_keypoints
from .head import CornerHeads
from .loss import corner_losses
from .targets import build_corner_targets

__all__ = ["CornerNet", "CenterNetTriplets"]


@META_ARCH_REGISTRY.register()
class CornerNet(nn.Module):
    """Hourglass backbone + per-stack corner pooling and heads (:class:`~.head.CornerHeads`).

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` (0-255, ``INPUT.FORMAT``
    order), optional ``"height"``/``"width"`` and, in training, ``"instances"`` with
    ``gt_boxes`` (XYXY_ABS pixels of ``image``) and ``gt_classes`` (int64 in ``[0, NUM_CLASSES)``).
    Training images must all have the same size (the mapper's fixed ``TRAIN_SIZE``).

    Output: training -> ``{"loss_heatmap", "loss_pull", "loss_push", "loss_offset"}`` (weighted;
    each summed over the stacks of ``IN_FEATURES`` and divided by their number); inference ->
    list of ``{"instances": Instances}`` (``pred_boxes`` XYXY_ABS in ``height x width`` pixels,
    ``scores`` descending, ``pred_classes``), at most ``MAX_PER_IMAGE``.

    Test (the authors' ``kp_detection``): per scale, the image is ``cv2.resize``-d to
    ``int(h * s) x int(w * s)`` and padded centred to ``(h | (d - 1)) x (w | (d - 1))`` (d = the
    backbone's size divisibility, 128: 511 for a 511 image), black in pixel space; with
    ``FLIP_TEST`` the mirrored input is decoded too and its boxes mirrored (``x' = W_out - x``)
    and appended; boxes are mapped back by the ratio ``W_out / W_in`` (128/511) and the
    padding, clipped to the resized image, divided by ``s``; pairs with score -1 are dropped;
    per-class soft-NMS (``soft_nms_merge`` with ``MERGE_BBOX``); the ``MAX_PER_IMAGE`` best.

    Raises:
        ValueError: a feature of ``IN_FEATURES`` missing from the backbone, features of
            different channels, empty/negative ``TEST_SCALES``, training inputs without
            ``instances`` or of different sizes.
    """

    with_center = False

    def __init__(self, cfg) -> None:
        super().__init__()
        c = cfg.MODEL.CORNERNET
        if cfg.TEST.AUG.ENABLED or cfg.VIS_PERIOD > 0:
            raise NotImplementedError(
                "TEST.AUG.ENABLED is not used by CornerNet: use MODEL.CORNERNET.FLIP_TEST and TEST_SCALES"
                if cfg.TEST.AUG.ENABLED else
                f"VIS_PERIOD={cfg.VIS_PERIOD}: training-time visualisation is not implemented; set VIS_PERIOD 0")
        self.num_classes = int(c.NUM_CLASSES)
        self.in_features = list(c.IN_FEATURES)
        self.backbone = build_backbone(cfg)
        shapes = self.backbone.output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing or not self.in_features:
            raise ValueError(f"MODEL.CORNERNET.IN_FEATURES {self.in_features}: the backbone outputs {sorted(shapes)}")
        channels = {shapes[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ValueError(f"MODEL.CORNERNET.IN_FEATURES {self.in_features} have different channels {channels}")
        self.heads = CornerHeads(len(self.in_features), channels.pop(), self.num_classes, int(c.POOL_CHANNELS),
                                 int(c.HEAD_CONV), int(c.HEAD_KERNEL), float(c.PRIOR_BIAS),
                                 cascade=self.with_center, center=self.with_center,
                                 norm=cfg.MODEL.HOURGLASS.NORM if "HOURGLASS" in cfg.MODEL else "BN")
        self.size_divisibility = max(int(self.backbone.size_divisibility), 1)
        self.radius_variant = str(c.GAUSSIAN_RADIUS_VARIANT)
        self.min_overlap = float(c.MIN_OVERLAP)
        self.center_sigma_divisor = float(c.CENTER_SIGMA_DIVISOR)
        self.weights = {"loss_heatmap": float(c.FOCAL_WEIGHT), "loss_pull": float(c.PULL_WEIGHT),
                        "loss_push": float(c.PUSH_WEIGHT), "loss_offset": float(c.OFF_WEIGHT)}
        self.focal_alpha, self.focal_beta = float(c.FOCAL_ALPHA), float(c.FOCAL_BETA)
        self.push_margin = float(c.PUSH_MARGIN)
        self.topk = int(c.TOPK)
        self.ae_threshold = float(c.AE_THRESHOLD)
        self.nms_kernel = int(c.NMS_KERNEL)
        self.num_dets = int(c.NUM_DETS)
        self.max_per_image = int(c.MAX_PER_IMAGE)
        self.flip_test = bool(c.FLIP_TEST)
        self.test_scales = [float(s) for s in c.TEST_SCALES]
        if not self.test_scales or min(self.test_scales) <= 0:
            raise ValueError(f"MODEL.CORNERNET.TEST_SCALES must be positive, got {list(c.TEST_SCALES)}")
        self.merge_bbox = bool(c.MERGE_BBOX)
        self.weight_exp = float(c.WEIGHT_EXP)
        self.soft_nms_kwargs = dict(method=str(c.SOFT_NMS_METHOD), sigma=float(c.SOFT_NMS_SIGMA),
                                    iou_threshold=float(c.SOFT_NMS_IOU_THRESH),
                                    score_threshold=float(c.SOFT_NMS_SCORE_THRESH),
                                    plus_one=bool(c.SOFT_NMS_PLUS_ONE))
        self.pad_centered = bool(c.TEST_PAD_CENTERED)
        self.outside_border = float(c.OUTSIDE_BORDER)
        self.center_region_area = float(c.CENTER_REGION_AREA)
        self.center_region_n = tuple(int(n) for n in c.CENTER_REGION_N)
        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------
    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: List[dict]):
        """See the class docstring."""
        if not self.training:
            return self.inference(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError(f"{type(self).__name__} in training mode needs 'instances' in every input dict "
                             "(use the train mapper)")
        sizes = {tuple(x["image"].shape[-2:]) for x in batched_inputs}
        if len(sizes) != 1:
            raise ValueError(f"{type(self).__name__} trains on images of one size (INPUT.CORNERNET.TRAIN_SIZE), "
                             f"got {sorted(sizes)}")
        images = torch.stack([self._normalize(x["image"]) for x in batched_inputs])
        feats = self.backbone(images)
        outputs = [self.heads(feats[f], s) for s, f in enumerate(self.in_features)]
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs],
                                       tuple(images.shape[-2:]), tuple(outputs[0]["tl_heat"].shape[-2:]))
        return self.losses(outputs, targets)

    def prepare_targets(self, instances: List[Instances], input_size: Tuple[int, int],
                        output_size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        """Per-image :func:`~.targets.build_corner_targets`, batched: ``*_heatmap (B, C, Ho, Wo)``,
        ``*_offset (K, 2)``, ``*_index (K,)`` and ``batch_index (K,)`` for the K objects of the batch."""
        per_image = [build_corner_targets(inst.gt_boxes.tensor, inst.gt_classes, self.num_classes, input_size,
                                          output_size, self.min_overlap, self.radius_variant, self.with_center,
                                          self.center_sigma_divisor) for inst in instances]
        out: Dict[str, torch.Tensor] = {}
        for key in per_image[0]:
            if key.endswith("_heatmap"):
                out[key] = torch.stack([t[key] for t in per_image])
            else:
                out[key] = torch.cat([t[key] for t in per_image])
        out["batch_index"] = torch.cat([torch.full_like(t["classes"], b) for b, t in enumerate(per_image)])
        return out

    def losses(self, outputs: List[Dict[str, torch.Tensor]], targets: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Every stack's :func:`~.loss.corner_losses`, summed, divided by the number of stacks, weighted."""
        n = len(outputs)
        total: Dict[str, torch.Tensor] = {}
        for out in outputs:
            for k, v in corner_losses(out, targets, self.focal_alpha, self.focal_beta, self.push_margin).items():
                total[k] = total.get(k, 0.0) + v / n
        return {k: v * self.weights[k] for k, v in total.items()}

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _resize(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
        """``cv2.resize`` (bilinear) of a ``(3, h, w)`` image, as the authors resize the uint8 test image."""
        if tuple(image.shape[1:]) == (new_h, new_w):
            return image
        arr = image.permute(1, 2, 0).cpu().numpy()
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float32)
        out = cv2.resize(np.ascontiguousarray(arr), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(out.reshape(new_h, new_w, -1)).permute(2, 0, 1)

    def _test_input(self, image: torch.Tensor, scale: float):
        """The authors' test input at ``scale``: ``(1, 3, Hp, Wp)`` normalised batch, ``(new_h,
        new_w)`` of the resized image and its ``(top, left)`` in the padded input."""
        h, w = int(image.shape[1]), int(image.shape[2])
        new_h, new_w = int(h * scale), int(w * scale)
        if new_h <= 0 or new_w <= 0:
            raise ValueError(f"MODEL.CORNERNET.TEST_SCALES: scale {scale} gives an empty image from {h}x{w}")
        resized = self._resize(image, new_h, new_w)
        d = self.size_divisibility
        if self.pad_centered:
            hp, wp = new_h | (d - 1), new_w | (d - 1)
            top, left = hp // 2 - new_h // 2, wp // 2 - new_w // 2
        else:
            hp, wp = -(-new_h // d) * d, -(-new_w // d) * d
            top, left = 0, 0
        batch = (-self.pixel_mean / self.pixel_std).view(1, -1, 1, 1).expand(1, -1, hp, wp).clone()
        batch[0, :, top:top + new_h, left:left + new_w] = self._normalize(resized)
        return batch, (new_h, new_w), (top, left)

    def _decode(self, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Float32 sigmoid and :func:`~.decode.cornernet_decode` of a (1 or 2 image) output."""
        dets = cornernet_decode(out["tl_heat"].float().sigmoid(), out["br_heat"].float().sigmoid(),
                                out["tl_tag"].float(), out["br_tag"].float(), out["tl_off"].float(),
                                out["br_off"].float(), self.topk, self.ae_threshold, self.nms_kernel, self.num_dets)
        if self.with_center:
            ct = topk_keypoints(heatmap_peaks(out["ct_heat"].float().sigmoid(), self.nms_kernel), self.topk,
                                out["ct_off"].float())
            dets["centers"] = torch.stack([ct["xs"], ct["ys"]], -1)
            dets["center_scores"], dets["center_classes"] = ct["scores"], ct["classes"]
        return dets

    @torch.no_grad()
    def _run_scale(self, image: torch.Tensor, scale: float) -> Dict[str, torch.Tensor]:
        """Candidates of one test scale in original-image pixels (flip appended): ``boxes (D, 4)``,
        ``scores``, ``tl_scores``, ``br_scores``, ``classes`` and, for Triplets, the centres."""
        batch, (new_h, new_w), (top, left) = self._test_input(image, scale)
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        feats = self.backbone(batch)
        out = self.heads(feats[self.in_features[-1]], len(self.in_features) - 1)
        with torch.autocast(batch.device.type, enabled=False):
            dets = self._decode(out)
            out_h, out_w = out["tl_heat"].shape[-2:]
            if self.flip_test:  # mirror the flipped image's boxes (x1' = W_out - x2, x2' = W_out - x1)
                fb = dets["boxes"][1]
                dets["boxes"][1] = torch.stack([out_w - fb[:, 2], fb[:, 1], out_w - fb[:, 0], fb[:, 3]], 1)
                if self.with_center:
                    dets["centers"][1, :, 0] = out_w - dets["centers"][1, :, 0]
            dets = {k: v.flatten(0, 1) for k, v in dets.items()}  # (2 D, ...) original then flipped
            rx, ry = out_w / batch.shape[-1], out_h / batch.shape[-2]
            scale_vec = dets["boxes"].new_tensor([rx, ry, rx, ry])
            shift = dets["boxes"].new_tensor([left, top, left, top])
            boxes = dets["boxes"] / scale_vec - shift
            if self.outside_border >= 0:
                b = self.outside_border
                outside = (boxes[:, 0] <= -b) | (boxes[:, 2] >= new_w + b) | (boxes[:, 1] <= -b) | (boxes[:, 3] >= new_h + b)
                dets["scores"] = torch.where(outside, dets["scores"].new_full((), -1.0), dets["scores"])
            limit = boxes.new_tensor([new_w, new_h, new_w, new_h])
            dets["boxes"] = torch.minimum(boxes.clamp(min=0), limit) / scale
            if self.with_center:
                c = dets["centers"] / scale_vec[:2] - shift[:2]
                dets["centers"] = torch.minimum(c.clamp(min=0), limit[:2]) / scale
        return dets

    def _postprocess(self, dets: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Drop score -1, per-class soft-NMS (merge), top ``MAX_PER_IMAGE``."""
        keep = dets["scores"] > -1
        boxes, scores, classes = dets["boxes"][keep], dets["scores"][keep], dets["classes"][keep]
        if self.merge_bbox:
            coord = torch.stack([dets["tl_scores"][keep], dets["br_scores"][keep]], 1)
            idx, scores, boxes = soft_nms_merge(boxes, scores, classes, coord, weight_exp=self.weight_exp,
                                                **self.soft_nms_kwargs)
        else:
            idx, scores = soft_nms(boxes, scores, classes, **self.soft_nms_kwargs)
            boxes = boxes[idx]
        classes = classes[idx]
        order = scores.argsort(descending=True)[: self.max_per_image]
        return boxes[order], scores[order], classes[order]

    def _merge_scales(self, per_scale: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        keys = ("boxes", "scores", "tl_scores", "br_scores", "classes")
        return {k: torch.cat([d[k] for d in per_scale]) for k in keys}

    @torch.no_grad()
    def detect_image(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one ``(3, H, W)`` image (0-255): every test scale, soft-NMS (class
        docstring). Returns ``boxes (N, 4)`` XYXY_ABS pixels of ``image``, ``scores (N,)``
        descending, ``classes (N,)`` int64."""
        per_scale = [self._run_scale(image, s) for s in self.test_scales]
        return self._postprocess(self._rescore(per_scale))

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, Instances]]:
        """:meth:`detect_image` of one image at a time (as the authors), as detectron2 outputs."""
        processed = []
        for inputs in batched_inputs:
            image = inputs["image"]
            boxes, scores, classes = self.detect_image(image)
            h, w = int(image.shape[1]), int(image.shape[2])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_classes = classes
            processed.append({"instances": detector_postprocess(inst, inputs.get("height", h), inputs.get("width", w))})
        return processed

    def _rescore(self, per_scale: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        return self._merge_scales(per_scale)


@META_ARCH_REGISTRY.register()
class CenterNetTriplets(CornerNet):
    """CenterNet: Keypoint Triplets (Duan et al. 2019): :class:`CornerNet` with cascade corner
    pooling, centre pooling and a centre heatmap + offsets per stack (Sec. 3.2-3.5; targets:
    ``sigma = d / CENTER_SIGMA_DIVISOR`` at the box centre, the corners' radius).

    Test ([DK] ``test/coco.py``): the CornerNet candidates (``TOPK`` 70 corners), boxes with a
    corner more than ``OUTSIDE_BORDER`` (5) px outside the scaled image dropped, then
    :func:`~.decode.central_region_rescore` against the top-``TOPK`` centre keypoints of the
    scale-1 input (and its flip), then soft-NMS as CornerNet.

    Raises:
        ValueError: ``TEST_SCALES`` without 1.0 (the centres come from scale 1, as the authors').
    """

    with_center = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if 1.0 not in self.test_scales:
            raise ValueError(f"MODEL.CORNERNET.TEST_SCALES {self.test_scales} must contain 1.0: CenterNet-Triplets "
                             "takes its centre keypoints from the scale-1 input")

    def _rescore(self, per_scale: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        dets = self._merge_scales(per_scale)
        ref = per_scale[self.test_scales.index(1.0)]
        dets["scores"] = central_region_rescore(
            dets["boxes"][None], dets["scores"][None], dets["classes"][None], ref["centers"][None],
            ref["center_scores"][None], ref["center_classes"][None], self.center_region_area,
            self.center_region_n)[0]
        return dets
