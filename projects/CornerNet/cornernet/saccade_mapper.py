"""CornerNet-Saccade training data: the authors' object-centred zoom-and-crop and its dataset mapper.

Source: princeton-vl/CornerNet-Lite ``core/sample/cornernet_saccade.py`` (``ref_scale``,
``scale_image_detections``, ``crop_image_dets``, ``clip_detections``, ``bbox_overlaps`` and the
sampler ``cornernet_saccade``) and ``core/sample/utils.py`` (``crop_image``); paper: Law, Teng,
Russakovsky, Deng, "CornerNet-Lite" (2019), Sec. 3.1 ("Training").

Per training image (boxes XYXY_ABS pixels):

1. The boxes are clipped to ``[0, W - 1] x [0, H - 1]`` (the authors' inclusive-pixel clip);
   boxes left with a non-positive width or height are dropped.
2. Scale: one object is drawn at random (the *reference*); with ``hw`` its max side,
   ``scale = randint(*REF_SCALE_RANGES[i]) / hw`` where ``i`` is the first
   ``REF_SIZE_THRESHOLDS[i] < hw`` (else the last range): by default ``hw > 96 -> [96, 255)``,
   ``hw > 32 -> [32, 97)``, else ``[16, 33)`` (numpy ``randint``, high exclusive). Images without
   objects use ``scale = choice(INPUT.CORNERNET.SCALES)``.
3. The image is resized by ``cv2.resize`` to ``(int(W * scale), int(H * scale))`` (bilinear);
   boxes are multiplied by ``scale``.
4. A ``TRAIN_SIZE`` window around an integer centre ``(xc, yc)`` of the resized image is pasted
   centred on a black ``TRAIN_SIZE`` canvas (``crop_image``): on an axis where the resized image
   is not larger than the window the centre is ``size // 2``; otherwise the window contains the
   reference object (``xc = randint(max(x1 - win_w, 0), min(W' - win_w, x0) + 1) + win_w // 2``),
   or, with ``RAND_CENTER`` and probability 0.5, is centred on it with a jitter of
   ``randint(0, CENTER_JITTER)`` on each side. Without objects the window is uniform in the image.
   A point ``x`` of the resized image lands at ``x - (xc - out_w // 2)``.
5. Boxes are clipped to the canvas region covered by the image (``[x0, x1 - 1] x [y0, y1 - 1]``
   of that border, as ``clip_detections``); non-positive ones are dropped.
6. Horizontal flip and colour jitter + PCA lighting (as CornerNet, :func:`flip_and_color_augmentations`).
7. An object is a *positive* when ``area(box) / area(annotated box * scale) > MIN_VISIBLE`` (the
   annotated box before any clip, as the authors' ``orig_detections``) and
   ``max(int(y2) - int(y1), int(x2) - int(x1)) >= MIN_SCALE`` (final crop-frame coordinates, int
   = truncation); the others are *ignored* (``gt_ignore``: the model draws no positives for them
   and does not treat their corners as negatives). Both kinds stay in ``instances``.

Deviations from the authors (all outside the draws and pixels of their defaults):

* The flip is detectron2's ``x' = W - x`` (the authors: ``W - x - 1``), as in
  :mod:`projects.CornerNet.cornernet.dataset_mapper`; truncated widths are unchanged by either
  flip, so the ``MIN_SCALE`` rule gives the same answer.
* Boxes and scales are float64 (the authors' detections are float32).
* The reference object is drawn from the objects in the dataset dict's order (the authors' COCO
  loader groups an image's objects by category); the draw itself is the same.
* Where the authors' ``randint`` for the window would be called with ``low > high`` (only
  possible through float rounding, or configs whose reference scale does not fit the window,
  which are refused) the range is collapsed to ``low``; a resized side of 0 px becomes 1 px.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from common.config import configurable
from common.data import detection_utils as utils
from common.data import transforms as T
from common.data.dataset_mapper import ObjectListDatasetMapper, image_to_tensor
from common.data.transforms.centernet_aug import flip_and_color_augmentations
from common.structures import Boxes, BoxMode, Instances

from .dataset_mapper import build_cornernet_augmentation

__all__ = [
    "SaccadeCropTransform",
    "SaccadeRandomCrop",
    "CornerNetSaccadeDatasetMapper",
    "build_saccade_augmentation",
    "clip_boxes_inclusive",
    "saccade_positive_mask",
]


def clip_boxes_inclusive(boxes: np.ndarray, border: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """The authors' ``clip_detections``: clip ``(N, 4)`` XYXY_ABS boxes to the inclusive pixel
    range ``x in [x0, x1 - 1]``, ``y in [y0, y1 - 1]`` of ``border = (y0, y1, x0, x1)`` and keep
    those with a positive width and height.

    Returns:
        ``(M, 4)`` float64 clipped boxes and the ``(M,)`` int64 indices of the kept rows.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    y0, y1, x0, x1 = (float(v) for v in border)
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], x0, x1 - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], y0, y1 - 1)
    keep = np.nonzero((out[:, 2] - out[:, 0] > 0) & (out[:, 3] - out[:, 1] > 0))[0]
    return out[keep], keep


def saccade_positive_mask(boxes: np.ndarray, ref_areas: np.ndarray, min_visible: float = 0.5,
                          min_scale: int = 16) -> np.ndarray:
    """Which objects of a Saccade crop are positives (step 7 of the module docstring).

    Args:
        boxes: ``(N, 4)`` XYXY_ABS crop-frame pixels after the crop clip (and flip).
        ref_areas: ``(N,)`` areas (px^2) of the same objects' annotated boxes after the scaling,
            before any clip (the authors' ``orig_detections * scale``).
        min_visible: ``INPUT.CORNERNET.SACCADE.MIN_VISIBLE``; the rule is ``area / ref_area > min_visible``.
        min_scale: ``INPUT.CORNERNET.SACCADE.MIN_SCALE``; the rule is
            ``max(int(y2) - int(y1), int(x2) - int(x1)) >= min_scale``.

    Returns:
        ``(N,)`` bool, True for positives (the others are ignored objects).

    Source: princeton-vl/CornerNet-Lite ``core/sample/cornernet_saccade.py`` (``bbox_overlaps``,
    ``valid = det_max >= min_scale``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ref_areas = np.asarray(ref_areas, dtype=np.float64).reshape(-1)
    if ref_areas.shape[0] != boxes.shape[0]:
        raise ValueError(f"saccade_positive_mask: {boxes.shape[0]} boxes but {ref_areas.shape[0]} reference areas")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = areas / ref_areas > min_visible
    ints = np.trunc(boxes)
    det_max = np.maximum(ints[:, 3] - ints[:, 1], ints[:, 2] - ints[:, 0])
    return visible & (det_max >= min_scale)


class SaccadeCropTransform(T.Transform):
    """Resize by ``scale`` then paste a window of the resized image on a black canvas
    (the authors' ``scale_image_detections`` + ``crop_image``).

    Args:
        h, w: input image size (px).
        scale: zoom factor; the resized image is ``new_h = int(h * scale)``, ``new_w = int(w * scale)``.
        center: ``(xc, yc)`` integer window centre in resized-image pixels.
        window: ``(win_h, win_w)`` window size (the authors' ``input_size``); the window covers
            ``[xc - win_w // 2, xc + win_w // 2)`` (254 px for 255, as theirs), cut to the image.
        output_size: ``(out_h, out_w)`` canvas size (the authors' ``output_size = input_size``).

    ``apply_image``: ``(h, w[, C])`` -> ``(out_h, out_w[, C])`` same dtype (``cv2.resize``
    bilinear, then a copy; zeros elsewhere). ``apply_coords``: ``(N, 2)`` (x, y) ->
    ``(x * scale - offset_x, y * scale - offset_y)`` with ``offset = (xc - out_w // 2, yc - out_h // 2)``.
    :attr:`border` ``= (y0, y1, x0, x1)``: the canvas rows/columns ``[y0, y1) x [x0, x1)`` that hold image pixels.
    """

    def __init__(self, h: int, w: int, scale: float, center: Tuple[int, int], window: Tuple[int, int],
                 output_size: Tuple[int, int]):
        super().__init__()
        h, w, scale = int(h), int(w), float(scale)
        new_h, new_w = max(int(h * scale), 1), max(int(w * scale), 1)
        xc, yc = int(center[0]), int(center[1])
        win_h, win_w = int(window[0]), int(window[1])
        out_h, out_w = int(output_size[0]), int(output_size[1])
        x0, x1 = max(0, xc - win_w // 2), min(xc + win_w // 2, new_w)
        y0, y1 = max(0, yc - win_h // 2), min(yc + win_h // 2, new_h)
        left, right, top, bottom = xc - x0, x1 - xc, yc - y0, y1 - yc
        cx, cy = out_w // 2, out_h // 2
        src = (y0, y1, x0, x1)  # source rows/columns of the resized image
        border = (cy - top, cy + bottom, cx - left, cx + right)
        offset_x, offset_y = xc - cx, yc - cy
        del x0, x1, y0, y1, left, right, top, bottom, cx, cy
        self._set_attributes(locals())

    def _paste(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"SaccadeCropTransform expects an image of size {(self.h, self.w)}, got {img.shape}")
        resized = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
            resized = resized[:, :, None]
        out = np.zeros((self.out_h, self.out_w) + img.shape[2:], dtype=img.dtype)
        sy0, sy1, sx0, sx1 = self.src
        by0, by1, bx0, bx1 = self.border
        out[by0:by1, bx0:bx1] = resized[sy0:sy1, sx0:sx1]
        return out

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        return self._paste(img, cv2.INTER_LINEAR if interp is None else interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._paste(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        return coords * self.scale - np.array([self.offset_x, self.offset_y], dtype=np.float64)

    def clip_boxes(self, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`clip_boxes_inclusive` of canvas-frame ``(N, 4)`` boxes to :attr:`border`."""
        return clip_boxes_inclusive(boxes, self.border)


class SaccadeRandomCrop(T.Augmentation):
    """CornerNet-Saccade's random zoom + crop (steps 1-4 of the module docstring); returns a
    :class:`SaccadeCropTransform`. All draws use ``np.random`` in the authors' order.

    Args:
        output_size: ``(h, w)`` of the crop (``INPUT.CORNERNET.TRAIN_SIZE``, 255x255 for Saccade).
        ref_size_thresholds: decreasing max-side thresholds (px of the input image,
            ``INPUT.CORNERNET.SACCADE.REF_SIZE_THRESHOLDS``, ``(96, 32)``).
        ref_scale_ranges: ``len(thresholds) + 1`` ``(low, high)`` integer ranges of the zoomed max
            side (``INPUT.CORNERNET.SACCADE.REF_SCALE_RANGES``, ``((96, 255), (32, 97), (16, 33))``).
        scales: zooms of images without objects (``INPUT.CORNERNET.SCALES``).
        rand_center: centre the window on the reference with probability 0.5
            (``INPUT.CORNERNET.SACCADE.RAND_CENTER``).
        center_jitter: the centred window's jitter ``randint(0, center_jitter)`` px per side
            (``INPUT.CORNERNET.SACCADE.CENTER_JITTER``, the authors' 15).

    ``get_transform(image, boxes)``: ``image`` ``(H, W[, C])``; ``boxes`` ``(N, 4)`` XYXY_ABS
    pixels of the image or None; they are clipped to the image (step 1) before the draw.

    Raises:
        ValueError: bad values (the message names the config key), including a reference range
            whose largest zoomed side (``high - 1``) exceeds the window.
    """

    def __init__(self, output_size: Tuple[int, int] = (255, 255),
                 ref_size_thresholds: Sequence[float] = (96, 32),
                 ref_scale_ranges: Sequence[Sequence[int]] = ((96, 255), (32, 97), (16, 33)),
                 scales: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0), rand_center: bool = True,
                 center_jitter: int = 15):
        super().__init__()
        output_size = tuple(int(v) for v in output_size)
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"SaccadeRandomCrop: output_size must be (h, w) > 0, got {output_size} "
                             "(INPUT.CORNERNET.TRAIN_SIZE)")
        ref_size_thresholds = tuple(float(v) for v in ref_size_thresholds)
        if any(a <= b for a, b in zip(ref_size_thresholds, ref_size_thresholds[1:])):
            raise ValueError("INPUT.CORNERNET.SACCADE.REF_SIZE_THRESHOLDS must be decreasing, "
                             f"got {ref_size_thresholds}")
        ref_scale_ranges = tuple(tuple(int(v) for v in r) for r in ref_scale_ranges)
        if len(ref_scale_ranges) != len(ref_size_thresholds) + 1 or any(len(r) != 2 for r in ref_scale_ranges):
            raise ValueError(f"INPUT.CORNERNET.SACCADE.REF_SCALE_RANGES must hold len(REF_SIZE_THRESHOLDS) + 1 = "
                             f"{len(ref_size_thresholds) + 1} (low, high) pairs, got {ref_scale_ranges}")
        for low, high in ref_scale_ranges:
            if not 0 < low < high:
                raise ValueError(f"INPUT.CORNERNET.SACCADE.REF_SCALE_RANGES: need 0 < low < high, got {(low, high)}")
            if high - 1 > min(output_size):
                raise ValueError(f"INPUT.CORNERNET.SACCADE.REF_SCALE_RANGES: a zoomed side up to {high - 1} px does "
                                 f"not fit the {output_size} window (INPUT.CORNERNET.TRAIN_SIZE)")
        scales = tuple(float(s) for s in scales)
        if len(scales) == 0 or min(scales) <= 0:
            raise ValueError(f"INPUT.CORNERNET.SCALES must be positive, got {scales}")
        center_jitter = int(center_jitter)
        if center_jitter < 1:
            raise ValueError(f"INPUT.CORNERNET.SACCADE.CENTER_JITTER must be >= 1 (randint(0, j)), got {center_jitter}")
        rand_center = bool(rand_center)
        self._init(locals())

    def _ref_scale(self, boxes: np.ndarray) -> Tuple[float, Optional[int]]:
        """The authors' ``ref_scale`` (``random_crop=False``) + the ``SCALES`` fallback."""
        if boxes.shape[0] == 0:
            return float(np.random.choice(self.scales)), None
        ref_ind = int(np.random.randint(boxes.shape[0]))
        ref = boxes[ref_ind]
        ref_hw = max(ref[3] - ref[1], ref[2] - ref[0])
        i = next((k for k, t in enumerate(self.ref_size_thresholds) if ref_hw > t), len(self.ref_size_thresholds))
        low, high = self.ref_scale_ranges[i]
        return np.random.randint(low=low, high=high) / ref_hw, ref_ind

    def _axis_center(self, size: int, window: int, ref: Optional[Tuple[float, float]], centered: bool) -> int:
        """One axis of the authors' ``crop_image_dets`` (``random_crop=True``)."""
        if size <= window:
            return size // 2
        if ref is None or not centered:
            low = max(ref[1] - window, 0) if ref is not None else 0
            high = min(size - window, ref[0]) if ref is not None else size - window
            low, high = int(low), int(high)
            return int(np.random.randint(low, max(high, low) + 1)) + window // 2
        mid = (ref[0] + ref[1]) // 2
        low = max(mid - np.random.randint(0, self.center_jitter), 0)
        high = min(mid + np.random.randint(0, self.center_jitter), size - 1)
        low, high = int(low), int(high)
        return int(np.random.randint(low, max(high, low) + 1))

    def get_transform(self, image: np.ndarray, boxes: Optional[np.ndarray]) -> SaccadeCropTransform:
        h, w = image.shape[:2]
        boxes = np.zeros((0, 4)) if boxes is None else boxes
        boxes, _ = clip_boxes_inclusive(boxes, (0, h, 0, w))
        scale, ref_ind = self._ref_scale(boxes)
        new_h, new_w = max(int(h * scale), 1), max(int(w * scale), 1)
        ref = None if ref_ind is None else boxes[ref_ind] * scale
        win_h, win_w = self.output_size
        centered = self.rand_center and np.random.uniform() > 0.5
        xc = self._axis_center(new_w, win_w, None if ref is None else (ref[0], ref[2]), centered)
        yc = self._axis_center(new_h, win_h, None if ref is None else (ref[1], ref[3]), centered)
        return SaccadeCropTransform(h, w, scale, (xc, yc), self.output_size, self.output_size)


def build_saccade_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """Training: ``[SaccadeRandomCrop(INPUT.CORNERNET.*), flip, colour]``; test: CornerNet's
    (:func:`~projects.CornerNet.cornernet.dataset_mapper.build_cornernet_augmentation`, no resize
    when ``INPUT.MIN_SIZE_TEST`` is 0).

    Raises:
        ValueError: bad ``INPUT.CORNERNET.*`` / ``INPUT.RANDOM_FLIP`` values (key named).
    """
    if not is_train:
        return build_cornernet_augmentation(cfg, False)
    c = cfg.INPUT.CORNERNET
    s = c.SACCADE
    augs: List[T.Augmentation] = [
        SaccadeRandomCrop(tuple(c.TRAIN_SIZE), tuple(s.REF_SIZE_THRESHOLDS),
                          tuple(tuple(r) for r in s.REF_SCALE_RANGES), tuple(c.SCALES), bool(s.RAND_CENTER),
                          int(s.CENTER_JITTER))
    ]
    augs += flip_and_color_augmentations(cfg, c)
    return augs


class CornerNetSaccadeDatasetMapper(ObjectListDatasetMapper):
    """The CornerNet-Saccade training mapper (module docstring); ``CornerNetSaccadeDatasetMapper(cfg, is_train)``.

    Training output dict: the input keys (``height``/``width`` = original size) plus

    * ``image``: ``(3, out_h, out_w)`` tensor of ``INPUT.CORNERNET.TRAIN_SIZE`` in ``INPUT.FORMAT``
      (float32 0-255 with ``COLOR_AUG``, colour jitter unclipped as the authors; uint8 without);
    * ``instances``: :class:`Instances` of size ``(out_h, out_w)`` with ``gt_boxes`` (``(N, 4)``
      XYXY_ABS crop pixels, clipped to the image content, step 5), ``gt_classes`` (``(N,)``
      int64) and ``gt_ignore`` (``(N,)`` bool, True for ignored objects, step 7). Images without
      objects give ``N = 0``.

    Crowd annotations are ordinary objects (``KEEP_CROWD``) and at most ``MAX_OBJECTS`` are
    used, as :class:`ObjectListDatasetMapper`. Test mode: as
    :class:`~projects.CornerNet.cornernet.dataset_mapper.CornerNetDatasetMapper`.

    Args (besides ObjectListDatasetMapper's): min_visible (``INPUT.CORNERNET.SACCADE.MIN_VISIBLE``),
    min_scale (``INPUT.CORNERNET.SACCADE.MIN_SCALE``).

    Raises:
        ValueError: bad config values (key named); from ``__call__``: the training augmentations
            hold no :class:`SaccadeRandomCrop`, or image read / size errors naming the file.
    """

    config_node = "INPUT.CORNERNET"

    @configurable
    def __init__(self, is_train: bool, *, min_visible: float = 0.5, min_scale: int = 16, **kwargs):
        super().__init__(is_train, **kwargs)
        if not 0.0 <= float(min_visible) < 1.0:
            raise ValueError(f"INPUT.CORNERNET.SACCADE.MIN_VISIBLE must be in [0, 1), got {min_visible}")
        if int(min_scale) < 0:
            raise ValueError(f"INPUT.CORNERNET.SACCADE.MIN_SCALE must be >= 0, got {min_scale}")
        self.min_visible = float(min_visible)
        self.min_scale = int(min_scale)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_saccade_augmentation(cfg, is_train)
        ret["min_visible"] = float(cfg.INPUT.CORNERNET.SACCADE.MIN_VISIBLE)
        ret["min_scale"] = int(cfg.INPUT.CORNERNET.SACCADE.MIN_SCALE)
        return ret

    def _select_annotations(self, annos: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """ObjectListDatasetMapper's crowd and ``MAX_OBJECTS`` rules."""
        if not self.keep_crowd:
            annos = [a for a in annos if a.get("iscrowd", 0) == 0]
        return annos[: self.max_objects] if self.max_objects > 0 else annos

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (not modified) to a model input dict (see the class docstring)."""
        if not self.is_train:
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annos = self._select_annotations(dataset_dict.pop("annotations", []))
        dataset_dict.pop("sem_seg_file_name", None)

        boxes = np.zeros((len(annos), 4), dtype=np.float64)
        if annos:
            raw = np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 4)
            modes = np.asarray([int(a["bbox_mode"]) for a in annos])
            for mode in np.unique(modes):  # one conversion per distinct mode
                sel = modes == mode
                boxes[sel] = BoxMode.convert(raw[sel], BoxMode(int(mode)), BoxMode.XYXY_ABS)
        classes = np.asarray([int(a["category_id"]) for a in annos], dtype=np.int64)

        # Step 1: the authors' clip to the image; `orig` keeps the unclipped annotated boxes.
        h, w = image.shape[:2]
        clipped, keep = clip_boxes_inclusive(boxes, (0, h, 0, w))
        orig, classes = boxes[keep], classes[keep]

        aug_input = T.AugInput(image, boxes=clipped)
        transforms = self.augmentations(aug_input)
        image = aug_input.image

        # Steps 4-6 on the boxes: clip at the Saccade crop (before the flip, as the authors).
        n = clipped.shape[0]
        both, cropped = np.concatenate([clipped, orig]), False
        for tfm in transforms.transforms:
            both = tfm.apply_box(both) if both.shape[0] else both
            if isinstance(tfm, SaccadeCropTransform):
                ref_boxes = both[n:]
                ref_areas = (ref_boxes[:, 2] - ref_boxes[:, 0]) * (ref_boxes[:, 3] - ref_boxes[:, 1])
                both, kept = tfm.clip_boxes(both[:n])
                ref_areas, classes, n, cropped = ref_areas[kept], classes[kept], kept.shape[0], True
        if not cropped:
            raise ValueError("CornerNetSaccadeDatasetMapper: the training augmentations hold no SaccadeRandomCrop "
                             f"(got {self.augmentations})")
        positive = saccade_positive_mask(both, ref_areas, self.min_visible, self.min_scale)

        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        instances = Instances(image_shape)
        instances.gt_boxes = Boxes(torch.as_tensor(both, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
        instances.gt_ignore = torch.as_tensor(~positive, dtype=torch.bool)
        dataset_dict["instances"] = instances
        return dataset_dict
