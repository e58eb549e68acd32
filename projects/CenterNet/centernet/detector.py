"""CenterNet meta-architecture ("Objects as Points", Zhou et al. 2019; [XZ] xingyizhou/CenterNet
``src/lib/trains/ctdet.py``, ``src/lib/detectors/ctdet.py``)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from common.assigners import build_centernet_targets
from common.data.transforms.centernet_aug import centernet_test_affine
from common.losses import clamped_sigmoid, gathered_l1_loss, heatmap_focal_loss
from common.modeling import META_ARCH_REGISTRY, build_backbone, detector_postprocess, register_pixel_stats
from common.ops import soft_nms
from common.structures import Boxes, Instances

from .decode import centernet_decode
from .head import CenterNetHead

__all__ = ["CenterNet"]

# MODEL.CENTERNET.HEAD_INIT "auto": the authors' network of each backbone (plain ResNet: msra_resnet).
_HEAD_INIT_OF_BACKBONE = {
    "build_resnet_deconv_backbone": "resnet_dcn",
    "build_dla_backbone": "pose_dla_dcn",
    "build_hourglass_backbone": "large_hourglass",
}


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
        if cfg.TEST.AUG.ENABLED or cfg.VIS_PERIOD > 0:  # detectron2 keys that would be silently ignored
            raise NotImplementedError(
                "TEST.AUG.ENABLED is not used by CenterNet: use its own test-time augmentation keys "
                "MODEL.CENTERNET.FLIP_TEST and MODEL.CENTERNET.TEST_SCALES" if cfg.TEST.AUG.ENABLED else
                f"VIS_PERIOD={cfg.VIS_PERIOD}: training-time visualisation is not implemented; set VIS_PERIOD 0")
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
        head_init = str(c.HEAD_INIT)
        if head_init == "auto":
            head_init = _HEAD_INIT_OF_BACKBONE.get(cfg.MODEL.BACKBONE.NAME, "resnet_dcn")
            if head_init == "resnet_dcn" and "RESNET_DECONV" in cfg.MODEL and not cfg.MODEL.RESNET_DECONV.DEFORMABLE:
                head_init = "msra_resnet"
        self.heads = nn.ModuleList([
            CenterNetHead(shapes[f].channels, self.num_classes, int(c.HEAD_CONV), float(c.PRIOR_BIAS), head_init)
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
        self.soft_nms_kwargs = dict(method=str(c.SOFT_NMS_METHOD), sigma=float(c.SOFT_NMS_SIGMA),
                                    iou_threshold=float(c.SOFT_NMS_IOU_THRESH),
                                    score_threshold=float(c.SOFT_NMS_SCORE_THRESH),
                                    plus_one=bool(c.SOFT_NMS_PLUS_ONE))
        self.pad_centered = bool(c.TEST_PAD_CENTERED)
        size = tuple(int(v) for v in c.TEST_INPUT_SIZE)
        if len(size) != 2 or min(size) < 0 or (min(size) == 0 and max(size) > 0):
            raise ValueError(f"MODEL.CENTERNET.TEST_INPUT_SIZE must be (h, w) > 0 or (0, 0), got {list(c.TEST_INPUT_SIZE)}")
        self.test_input_size: Optional[Tuple[int, int]] = size if min(size) > 0 else None
        self.clip_boxes = bool(c.CLIP_BOXES)

        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------
    def _batch(self, images: List[torch.Tensor], centered: bool) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise and pad raw ``(3, h, w)`` images into one ``(N, 3, Hp, Wp)`` tensor.

        The padding is black in pixel space (``-mean / std`` after normalisation), as the authors'
        ``warpAffine`` border. ``Hp = (max h | (d - 1)) + 1`` with ``d`` = size divisibility when
        ``centered`` (the authors' test padding), else the next multiple of ``d`` with the image at
        the top-left. Centred means the image centre ``(w // 2, h // 2)`` lands on the padded
        centre: ``top = Hp // 2 - h // 2``, ``left = Wp // 2 - w // 2`` ([XZ] ``base_detector.py``
        ``pre_process``; one row/column more on top/left than ``(Hp - h) // 2`` for odd sizes).
        Returns the tensor and per-image ``(top, left)`` offsets.
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
            top, left = (hp // 2 - h // 2, wp // 2 - w // 2) if centered else (0, 0)
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
        """Focal heatmap loss + 0.1 L1 size + 1 L1 offset, each averaged over the stacks (paper Eq. 4).

        Computed in float32 with autocast disabled (the head outputs are cast), so that a
        float16/bfloat16 autocast training has the float32 loss of its predictions.
        """
        with torch.autocast(outputs[0]["hm"].device.type, enabled=False):
            return self._losses_fp32(outputs, targets)

    def _losses_fp32(self, outputs, targets):
        n = len(outputs)
        loss = {k: outputs[0]["hm"].new_zeros((), dtype=torch.float32) for k in self.weights}
        for out in outputs:
            loss["loss_hm"] = loss["loss_hm"] + heatmap_focal_loss(
                clamped_sigmoid(out["hm"].float()), targets["heatmap"], self.focal_alpha, self.focal_beta) / n
            loss["loss_wh"] = loss["loss_wh"] + gathered_l1_loss(
                out["wh"].float(), targets["batch_index"], targets["index"], targets["wh"]) / n
            loss["loss_off"] = loss["loss_off"] + gathered_l1_loss(
                out["reg"].float(), targets["batch_index"], targets["index"], targets["offset"]) / n
        return {k: v * self.weights[k] for k, v in loss.items()}

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _resize(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
        """``cv2.resize`` (bilinear) of a ``(3, h, w)`` image as the authors resize the uint8 test
        image (uint8 stays uint8, other dtypes go through float32)."""
        if tuple(image.shape[1:]) == (new_h, new_w):
            return image
        arr = image.permute(1, 2, 0).cpu().numpy()
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float32)
        out = cv2.resize(np.ascontiguousarray(arr), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(out.reshape(new_h, new_w, -1)).permute(2, 0, 1)

    def _test_batch(self, images: List[torch.Tensor], scale: float) -> Tuple[torch.Tensor, List[Tuple[float, float, float]]]:
        """The authors' ``pre_process`` of each image at test ``scale``
        (:func:`~common.data.transforms.centernet_aug.centernet_test_affine`): ``cv2.resize`` to
        ``int(h * scale) x int(w * scale)``, then the centred padding (``keep_res``) or, with
        ``TEST_INPUT_SIZE``, the affine warp to that size (``fix_res``). Returns the normalised
        batch and per image ``(a, tx, ty)`` with ``input = a * resized + (tx, ty)``."""
        resized = []
        for im in images:
            (nh, nw), _, _ = centernet_test_affine(int(im.shape[1]), int(im.shape[2]), scale)
            resized.append(self._resize(im, nh, nw))
        if self.test_input_size is None:
            batch, offsets = self._batch(resized, centered=self.pad_centered)
            return batch, [(1.0, float(left), float(top)) for top, left in offsets]
        inp_h, inp_w = self.test_input_size
        warped, affines = [], []
        for im, r in zip(images, resized):
            _, m, _ = centernet_test_affine(int(im.shape[1]), int(im.shape[2]), scale, self.test_input_size)
            arr = r.permute(1, 2, 0).cpu().numpy()
            arr = arr if arr.dtype == np.uint8 else arr.astype(np.float32)
            out = cv2.warpAffine(np.ascontiguousarray(arr), m, (inp_w, inp_h), flags=cv2.INTER_LINEAR)
            warped.append(torch.from_numpy(out.reshape(inp_h, inp_w, -1)).permute(2, 0, 1))
            affines.append((float(m[0, 0]), float(m[0, 2]), float(m[1, 2])))
        batch, _ = self._batch(warped, centered=False)
        return batch, affines

    @torch.no_grad()
    def _run_scale(self, images: List[torch.Tensor], scale: float):
        """Detections of one test scale in each image's input frame (before ``scale``): lists of
        ``(k, 4)`` boxes, ``(k,)`` scores, ``(k,)`` classes. Heatmap and decoding in float32."""
        batch, affines = self._test_batch(images, scale)
        n = batch.shape[0]
        if self.flip_test:
            batch = torch.cat([batch, batch.flip(-1)])
        feat = self.backbone(batch)[self.in_features[-1]]
        out = self.heads[-1](feat)
        with torch.autocast(batch.device.type, enabled=False):
            return self._decode_scale(out, n, affines, scale)

    def _decode_scale(self, out, n, affines, scale):
        """Float32 sigmoid, flip averaging, top-K decoding and the map back through ``affines``."""
        hm, wh, reg = out["hm"].float().sigmoid(), out["wh"].float(), out["reg"].float()
        if self.flip_test:
            hm = (hm[:n] + hm[n:].flip(-1)) / 2
            wh = (wh[:n] + wh[n:].flip(-1)) / 2
            reg = reg[:n]
        boxes, scores, classes = centernet_decode(hm, wh, reg, self.topk)
        results = []
        for b in range(n):
            a, tx, ty = affines[b]
            shift = boxes.new_tensor([tx, ty, tx, ty])
            results.append(((boxes[b] * self.down_ratio - shift) / (a * scale), scores[b], classes[b]))
        return results

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, Instances]]:
        """Decode, merge scales (per-class soft-NMS + top-K when several), rescale to
        ``height x width``; boxes clipped to the image only with ``MODEL.CENTERNET.CLIP_BOXES``
        (the authors neither clip nor drop boxes)."""
        images = [x["image"] for x in batched_inputs]
        per_scale = [self._run_scale(images, s) for s in self.test_scales]
        processed = []
        for i, inputs in enumerate(batched_inputs):
            boxes = torch.cat([r[i][0] for r in per_scale])
            scores = torch.cat([r[i][1] for r in per_scale])
            classes = torch.cat([r[i][2] for r in per_scale])
            if self.use_soft_nms:
                keep, new_scores = soft_nms(boxes, scores, classes, **self.soft_nms_kwargs)
                boxes, scores, classes = boxes[keep], new_scores, classes[keep]
                order = scores.argsort(descending=True)[: self.topk]
                boxes, scores, classes = boxes[order], scores[order], classes[order]
            h, w = int(images[i].shape[1]), int(images[i].shape[2])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_classes = classes
            processed.append({"instances": detector_postprocess(
                inst, inputs.get("height", h), inputs.get("width", w),
                clip=self.clip_boxes, keep_empty=not self.clip_boxes)})
        return processed
