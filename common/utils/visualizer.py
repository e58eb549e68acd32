"""Draw detections and dataset annotations on images with OpenCV.

Same classes and method names as detectron2 v0.6 ``detectron2/utils/visualizer.py``
(``ColorMode``, ``VisImage``, ``Visualizer.draw_instance_predictions``, ``draw_dataset_dict``,
``overlay_instances``, ``draw_box``, ``draw_text``); drawing uses OpenCV instead of matplotlib.
Images go in and come out as RGB ``uint8`` ``(H, W, 3)``, as in detectron2. Colours follow
detectron2's convention: RGB tuples in [0, 1] (or a few single-letter/colour names).
"""
from __future__ import annotations

import colorsys
from enum import Enum, unique
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .colormap import random_color

__all__ = ["ColorMode", "VisImage", "Visualizer"]

_SMALL_OBJECT_AREA_THRESH = 1000
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_PX_AT_SCALE_1 = 16.0  # approx. text height in pixels of HERSHEY_SIMPLEX at fontScale 1
_NAMED_COLORS = {
    "g": (0.0, 0.5, 0.0), "green": (0.0, 0.5, 0.0), "r": (1.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
    "b": (0.0, 0.0, 1.0), "blue": (0.0, 0.0, 1.0), "w": (1.0, 1.0, 1.0), "white": (1.0, 1.0, 1.0),
    "k": (0.0, 0.0, 0.0), "black": (0.0, 0.0, 0.0), "y": (0.75, 0.75, 0.0), "yellow": (1.0, 1.0, 0.0),
    "c": (0.0, 0.75, 0.75), "cyan": (0.0, 1.0, 1.0), "m": (0.75, 0.0, 0.75), "magenta": (1.0, 0.0, 1.0),
}

Color = Union[str, Sequence[float], np.ndarray]


@unique
class ColorMode(Enum):
    """How instances are coloured (detectron2's enum values).

    IMAGE: random colour per instance. SEGMENTATION: same colour per class (``thing_colors``
    metadata), jittered. IMAGE_BW: image turned grayscale, instance masks keep their colour.
    """

    IMAGE = 0
    SEGMENTATION = 1
    IMAGE_BW = 2


def _to_rgb(color: Color) -> np.ndarray:
    """Colour name or RGB in [0, 1] -> ``(3,)`` float array in [0, 1]."""
    if isinstance(color, str):
        if color not in _NAMED_COLORS:
            raise ValueError(f"Unknown colour name {color!r}; use an RGB tuple in [0, 1] or one of {sorted(_NAMED_COLORS)}")
        return np.asarray(_NAMED_COLORS[color], dtype=np.float64)
    rgb = np.asarray(color, dtype=np.float64).reshape(-1)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 1:
        raise ValueError(f"Colours are RGB triples in [0, 1] (detectron2 convention), got {color!r}")
    return rgb


def _meta_get(metadata: Any, key: str) -> Any:
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def _create_text_labels(
    classes: Optional[Sequence[int]],
    scores: Optional[Sequence[float]],
    class_names: Optional[Sequence[str]],
    is_crowd: Optional[Sequence[int]] = None,
) -> Optional[List[str]]:
    """Labels ``"<class name> <score>%"`` (class index when names are missing, ``"|crowd"`` suffix).

    Raises:
        ValueError: a class index has no entry in ``class_names``.
    """
    labels = None
    if classes is not None:
        classes = [int(c) for c in classes]
        if class_names is not None and len(class_names) > 0:
            bad = [c for c in classes if not 0 <= c < len(class_names)]
            if bad:
                raise ValueError(f"class ids {bad} are outside thing_classes (0..{len(class_names) - 1}): {list(class_names)}")
            labels = [str(class_names[c]) for c in classes]
        else:
            labels = [str(c) for c in classes]
    if scores is not None:
        if labels is None:
            labels = ["{:.0f}%".format(s * 100) for s in scores]
        else:
            labels = ["{} {:.0f}%".format(label, s * 100) for label, s in zip(labels, scores)]
    if labels is not None and is_crowd is not None:
        labels = [label + ("|crowd" if crowd else "") for label, crowd in zip(labels, is_crowd)]
    return labels


def _boxes_to_numpy(boxes: Any) -> np.ndarray:
    """``Boxes`` / tensor / array / list -> ``(N, 4)`` float64 XYXY array."""
    if hasattr(boxes, "tensor"):
        boxes = boxes.tensor
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) XYXY_ABS, got shape {arr.shape}")
    return arr


class VisImage:
    """The drawing canvas: an RGB uint8 copy of the image resized by ``scale``."""

    def __init__(self, img: np.ndarray, scale: float = 1.0) -> None:
        """
        Args:
            img: ``(H, W, 3)`` RGB uint8 image.
            scale: output size factor; drawing coordinates stay in input-image pixels.
        """
        self.img = img
        self.scale = scale
        self.height, self.width = img.shape[:2]
        self.reset_image(img)

    def reset_image(self, img: np.ndarray) -> None:
        """Replace the canvas content with ``img`` (``(H, W, 3)``, values in 0..255)."""
        img = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        size = (max(int(round(self.width * self.scale)), 1), max(int(round(self.height * self.scale)), 1))
        if size != (img.shape[1], img.shape[0]):
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        self.canvas = np.ascontiguousarray(img)

    def save(self, filepath: str) -> None:
        """Write the canvas to ``filepath`` (format from its extension).

        Raises:
            OSError: OpenCV could not write the file.
        """
        if not cv2.imwrite(filepath, cv2.cvtColor(self.canvas, cv2.COLOR_RGB2BGR)):
            raise OSError(f"Could not write image {filepath!r} (unknown extension or unwritable directory)")

    def get_image(self) -> np.ndarray:
        """The visualised image: RGB uint8 ``(round(H*scale), round(W*scale), 3)``."""
        return self.canvas.copy()


class Visualizer:
    """Draw boxes, masks and labels on an RGB image (detectron2 v0.6 ``Visualizer`` API)."""

    def __init__(
        self,
        img_rgb: np.ndarray,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ) -> None:
        """
        Args:
            img_rgb: ``(H, W, 3)`` RGB image (``(H, W)`` grayscale is expanded), values 0..255.
            metadata: dataset ``Metadata`` (or dict) with optional ``thing_classes`` and
                ``thing_colors`` (RGB 0..255).
            scale: output size factor.
            instance_mode: a ``ColorMode``.

        Raises:
            ValueError: the image is not ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
        """
        img = np.asarray(img_rgb)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise ValueError(f"Visualizer expects an (H, W, 3) RGB image, got shape {img.shape}")
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        self.img = np.clip(img, 0, 255).astype(np.uint8)
        self.metadata = metadata
        self.output = VisImage(self.img, scale=scale)
        self._instance_mode = instance_mode
        # Font size in input-image pixels; grows with the image, as detectron2's.
        self._default_font_size = max(np.sqrt(self.output.height * self.output.width) // 90, 10 // scale)

    def get_output(self) -> VisImage:
        return self.output

    # ------------------------------------------------------------------ high level
    def draw_instance_predictions(self, predictions: Any) -> VisImage:
        """Draw the predicted instances of one image.

        Args:
            predictions: ``Instances`` with optional ``pred_boxes`` (``(N, 4)`` XYXY_ABS pixels of
                this image), ``scores`` ``(N,)``, ``pred_classes`` ``(N,)`` (contiguous ids,
                named through ``metadata.thing_classes``) and ``pred_masks`` ``(N, H, W)``.

        Returns:
            the ``VisImage`` drawn on.
        """
        boxes = predictions.pred_boxes if predictions.has("pred_boxes") else None
        scores = predictions.scores.tolist() if predictions.has("scores") else None
        classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else None
        labels = _create_text_labels(classes, scores, _meta_get(self.metadata, "thing_classes"))
        masks = None
        if predictions.has("pred_masks"):
            masks = predictions.pred_masks
            masks = np.asarray(masks.detach().cpu().numpy() if hasattr(masks, "detach") else masks) > 0.5

        colors, alpha = None, 0.5
        thing_colors = _meta_get(self.metadata, "thing_colors")
        if self._instance_mode == ColorMode.SEGMENTATION and thing_colors and classes is not None:
            colors = [self._jitter([x / 255 for x in thing_colors[c]]) for c in classes]
            alpha = 0.8
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(self._create_grayscale_image(masks.any(axis=0) if masks is not None else None))
            alpha = 0.3

        self.overlay_instances(boxes=boxes, labels=labels, masks=masks, assigned_colors=colors, alpha=alpha)
        return self.output

    def draw_dataset_dict(self, dic: dict) -> VisImage:
        """Draw the annotations of a detectron2 dataset dict (boxes and category labels).

        Args:
            dic: dataset dict whose ``"annotations"`` have ``bbox``, ``bbox_mode`` (XYXY_ABS=0 or
                XYWH_ABS=1), ``category_id`` (contiguous) and optional ``iscrowd``.

        Raises:
            ValueError: an unsupported ``bbox_mode`` (names the file).
        """
        annos = dic.get("annotations", None)
        if not annos:
            return self.output
        boxes = np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 4)
        modes = np.asarray([int(a["bbox_mode"]) for a in annos])
        if not np.isin(modes, (0, 1)).all():
            raise ValueError(
                f"draw_dataset_dict supports bbox_mode XYXY_ABS (0) and XYWH_ABS (1); got modes "
                f"{sorted(set(modes.tolist()))} in {dic.get('file_name', '?')}"
            )
        xywh = modes == 1
        boxes[xywh, 2:] += boxes[xywh, :2]

        category_ids = [a["category_id"] for a in annos]
        colors = None
        thing_colors = _meta_get(self.metadata, "thing_colors")
        if self._instance_mode == ColorMode.SEGMENTATION and thing_colors:
            colors = [self._jitter([x / 255 for x in thing_colors[c]]) for c in category_ids]
        labels = _create_text_labels(
            category_ids, None, _meta_get(self.metadata, "thing_classes"),
            is_crowd=[a.get("iscrowd", 0) for a in annos],
        )
        self.overlay_instances(boxes=boxes, labels=labels, assigned_colors=colors)
        return self.output

    def overlay_instances(
        self,
        *,
        boxes: Any = None,
        labels: Optional[Sequence[str]] = None,
        masks: Optional[np.ndarray] = None,
        keypoints: Any = None,
        assigned_colors: Optional[Sequence[Color]] = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw instances; larger ones first so small ones stay visible on top.

        Args:
            boxes: ``(N, 4)`` XYXY_ABS (``Boxes``, tensor, array or list).
            labels: ``N`` strings.
            masks: ``(N, H, W)`` binary masks.
            keypoints: not supported (must be None).
            assigned_colors: ``N`` RGB colours in [0, 1]; random palette colours when None.
            alpha: mask fill opacity.

        Raises:
            ValueError: inconsistent lengths. NotImplementedError: keypoints given.
        """
        if keypoints is not None:
            raise NotImplementedError("Visualizer.overlay_instances: keypoint drawing is not supported")
        box_arr = _boxes_to_numpy(boxes) if boxes is not None else None
        num = len(box_arr) if box_arr is not None else (len(masks) if masks is not None else 0)
        if masks is not None:
            masks = np.asarray(masks).astype(bool)
            if masks.ndim != 3 or masks.shape[1:] != (self.output.height, self.output.width):
                raise ValueError(f"masks must be (N, {self.output.height}, {self.output.width}), got {masks.shape}")
        for name, seq in (("masks", masks), ("labels", labels), ("assigned_colors", assigned_colors)):
            if seq is not None and len(seq) != num:
                raise ValueError(f"overlay_instances: {len(seq)} {name} for {num} instances")
        if num == 0:
            return self.output
        if assigned_colors is None:
            assigned_colors = [random_color(rgb=True, maximum=1) for _ in range(num)]
        colors = [_to_rgb(c) for c in assigned_colors]

        if box_arr is not None:
            areas = np.prod(box_arr[:, 2:] - box_arr[:, :2], axis=1)
        else:
            areas = masks.reshape(num, -1).sum(axis=1)
        order = np.argsort(-areas, kind="stable")

        for i in order.tolist():
            color = colors[i]
            if masks is not None:
                self.draw_binary_mask(masks[i], color=color, alpha=alpha)
            if box_arr is not None:
                self.draw_box(box_arr[i], edge_color=color)
            if labels is not None:
                self._draw_instance_label(labels[i], color, box_arr[i] if box_arr is not None else None,
                                          masks[i] if masks is not None else None)
        return self.output

    # ------------------------------------------------------------------ primitives
    def draw_box(self, box_coord: Sequence[float], alpha: float = 0.5, edge_color: Color = "g",
                 line_style: str = "-") -> VisImage:
        """Draw a rectangle outline.

        Args:
            box_coord: ``(x0, y0, x1, y1)`` XYXY_ABS in input-image pixels.
            alpha: edge opacity. line_style: only ``"-"`` (solid) is drawn; others fall back to it.
        """
        s = self.output.scale
        x0, y0, x1, y1 = (float(v) * s for v in box_coord)
        thickness = max(int(round(max(self._default_font_size / 4, 1) * s)), 1)
        self._blend_draw(
            (x0, y0, x1, y1), thickness, alpha,
            lambda layer, off: cv2.rectangle(
                layer, _pt(x0 - off[0], y0 - off[1]), _pt(x1 - off[0], y1 - off[1]),
                _color255(_to_rgb(edge_color)), thickness, cv2.LINE_AA,
            ),
        )
        return self.output

    def draw_text(self, text: str, position: Tuple[float, float], *, font_size: Optional[float] = None,
                  color: Color = "g", horiz_align: str = "center", rotation: float = 0) -> VisImage:
        """Write ``text`` with its top edge at ``position`` on a dark translucent background.

        Args:
            position: ``(x, y)`` in input-image pixels. horiz_align: "left", "center" or "right".
            font_size: text height in input-image pixels (default from the image size).
            rotation: ignored (OpenCV draws horizontal text only).
        """
        if horiz_align not in ("left", "center", "right"):
            raise ValueError(f"horiz_align must be left/center/right, got {horiz_align!r}")
        font_size = self._default_font_size if font_size is None else font_size
        rgb = np.maximum(_to_rgb(color), 0.2)  # keep text readable on the dark background
        rgb[np.argmax(rgb)] = max(0.8, float(np.max(rgb)))

        s = self.output.scale
        font_scale = max(font_size * s / _FONT_PX_AT_SCALE_1, 0.3)
        thick = max(int(round(font_scale * 1.5)), 1)
        (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, thick)
        pad = max(int(round(0.2 * th)), 1)
        x, y = position[0] * s, position[1] * s
        x -= {"left": 0.0, "center": tw / 2.0, "right": float(tw)}[horiz_align]

        canvas = self.output.canvas
        h, w = canvas.shape[:2]
        bx0, by0 = int(np.clip(x - pad, 0, w)), int(np.clip(y - pad, 0, h))
        bx1, by1 = int(np.clip(x + tw + pad, 0, w)), int(np.clip(y + th + baseline + pad, 0, h))
        if bx1 > bx0 and by1 > by0:
            roi = canvas[by0:by1, bx0:bx1]
            roi[:] = (roi.astype(np.float32) * 0.2).astype(np.uint8)  # black box at 80% opacity
        cv2.putText(canvas, text, _pt(x, y + th), _FONT, font_scale, _color255(rgb), thick, cv2.LINE_AA)
        return self.output

    def draw_binary_mask(self, binary_mask: np.ndarray, color: Color = "g", alpha: float = 0.5) -> VisImage:
        """Fill ``binary_mask`` (``(H, W)`` of the input image) with ``color`` at opacity ``alpha``."""
        mask = np.asarray(binary_mask).astype(bool)
        if self.output.scale != 1.0:
            mask = cv2.resize(mask.astype(np.uint8), self.output.canvas.shape[1::-1],
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        canvas = self.output.canvas
        fill = np.asarray(_color255(_to_rgb(color)), dtype=np.float32)
        canvas[mask] = (canvas[mask].astype(np.float32) * (1 - alpha) + fill * alpha).round().astype(np.uint8)
        return self.output

    # ------------------------------------------------------------------ helpers
    def _draw_instance_label(self, label: str, color: np.ndarray, box: Optional[np.ndarray],
                             mask: Optional[np.ndarray]) -> None:
        if box is not None:
            x0, y0, x1, y1 = box.tolist()
            text_pos, align = (x0, y0), "left"
            # Small or flat boxes would be covered by their label: put it outside, below the box
            # (or beside it at the image bottom).
            s = self.output.scale
            if (y1 - y0) * (x1 - x0) < _SMALL_OBJECT_AREA_THRESH * s or y1 - y0 < 40 * s:
                text_pos = (x1, y0) if y1 >= self.output.height - 5 else (x0, y1)
            height = y1 - y0
        elif mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            text_pos, align = (float(np.median(xs)), float(np.median(ys))), "center"
            height = float(ys.max() - ys.min())
        else:
            return
        height_ratio = height / np.sqrt(self.output.height * self.output.width)
        font_size = np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2) * 0.5 * self._default_font_size
        self.draw_text(label, text_pos, color=self._change_color_brightness(color, 0.7),
                       horiz_align=align, font_size=font_size)

    def _blend_draw(self, box: Tuple[float, float, float, float], margin: int, alpha: float, draw) -> None:
        """Run ``draw(layer, offset)`` on a copy of the box's region and blend it back with ``alpha``.

        Only the region around the box is copied, so the cost is the box area, not the image's.
        """
        canvas = self.output.canvas
        h, w = canvas.shape[:2]
        x0, y0, x1, y1 = box
        rx0, ry0 = int(np.clip(np.floor(min(x0, x1)) - margin - 1, 0, w)), int(np.clip(np.floor(min(y0, y1)) - margin - 1, 0, h))
        rx1, ry1 = int(np.clip(np.ceil(max(x0, x1)) + margin + 2, 0, w)), int(np.clip(np.ceil(max(y0, y1)) + margin + 2, 0, h))
        if rx1 <= rx0 or ry1 <= ry0:
            return
        roi = canvas[ry0:ry1, rx0:rx1]
        layer = roi.copy()
        draw(layer, (rx0, ry0))
        changed = (layer != roi).any(axis=2)
        roi[changed] = (layer[changed].astype(np.float32) * alpha
                        + roi[changed].astype(np.float32) * (1 - alpha)).round().astype(np.uint8)

    def _create_grayscale_image(self, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Grayscale copy of the image (3 channels); pixels inside ``mask`` keep their colour."""
        gray = np.repeat(self.img.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
        if mask is not None:
            gray[mask] = self.img[mask]
        return gray

    @staticmethod
    def _change_color_brightness(color: Color, brightness_factor: float) -> np.ndarray:
        """Scale the HLS lightness of ``color`` by ``1 + brightness_factor`` (factor in [-1, 1])."""
        if not -1.0 <= brightness_factor <= 1.0:
            raise ValueError(f"brightness_factor must be in [-1, 1], got {brightness_factor}")
        h, l, s = colorsys.rgb_to_hls(*_to_rgb(color))
        l = float(np.clip(l * (1 + brightness_factor), 0.0, 1.0))
        return np.asarray(colorsys.hls_to_rgb(h, l, s))

    @staticmethod
    def _jitter(color: Sequence[float]) -> np.ndarray:
        """``color`` moved by a random vector of norm 0.5, clipped to [0, 1] (varies same-class colours)."""
        vec = np.random.rand(3)
        vec = vec / np.linalg.norm(vec) * 0.5
        return np.clip(vec + np.asarray(color, dtype=np.float64), 0, 1)


def _pt(x: float, y: float) -> Tuple[int, int]:
    return int(round(x)), int(round(y))


def _color255(rgb: np.ndarray) -> Tuple[int, int, int]:
    r, g, b = (int(round(float(c) * 255)) for c in rgb)
    return r, g, b
