"""Deterministic geometric transforms (``detectron2/data/transforms/transform.py``).

The generic transforms (flip, crop, pad, blend, no-op, lists) come from ``fvcore.transforms``;
this module only adds :class:`ResizeTransform`, which detectron2 defines itself so that uint8
images are resized by PIL (the exact pixels detectron2-trained models saw) and other dtypes by
``torch.nn.functional.interpolate``.

Coordinates follow detectron2: continuous pixel coordinates, an image of shape (H, W) spans
``[0, W] x [0, H]``; boxes are ``(N, 4)`` XYXY_ABS float arrays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

__all__ = [
    "BlendTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "ResizeTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
]

# PIL resampling filter -> torch.nn.functional.interpolate mode, for non-uint8 inputs.
_PIL_TO_TORCH_MODE = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


class ResizeTransform(Transform):
    """Resize an image of size (h, w) to (new_h, new_w).

    Args:
        h, w: input image size in pixels.
        new_h, new_w: output size in pixels.
        interp: a PIL resampling filter (``Image.BILINEAR`` by default, as detectron2).

    ``apply_image`` takes ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` arrays whose first two
    dims (or dims 1, 2 for 4-D) match ``(h, w)``; uint8 goes through PIL (bit-identical to
    detectron2), other dtypes through ``F.interpolate(align_corners=False)``.
    ``apply_coords`` scales x by ``new_w / w`` and y by ``new_h / h``.

    Source: ``detectron2/data/transforms/transform.py`` (ResizeTransform).
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: Optional[int] = None):
        super().__init__()
        if interp is None:
            interp = Image.BILINEAR
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform expects an image of size {(self.h, self.w)}, got shape {img.shape}"
            )
        if img.ndim > 4:
            raise ValueError(f"ResizeTransform supports at most 4-D images, got shape {img.shape}")
        method = interp if interp is not None else self.interp
        if img.dtype == np.uint8:
            return self._resize_pil(img, method)
        return self._resize_torch(img, method)

    def _resize_pil(self, img: np.ndarray, method: int) -> np.ndarray:
        # PIL cannot hold an explicit single channel axis: squeeze it and restore it afterwards.
        single_channel = img.ndim == 3 and img.shape[2] == 1
        pil_image = Image.fromarray(img[:, :, 0] if single_channel else img)
        out = np.asarray(pil_image.resize((self.new_w, self.new_h), method))
        return out[:, :, None] if single_channel else out

    def _resize_torch(self, img: np.ndarray, method: int) -> np.ndarray:
        if method not in _PIL_TO_TORCH_MODE:
            raise ValueError(f"Interpolation {method} is not supported for non-uint8 images")
        mode = _PIL_TO_TORCH_MODE[method]
        tensor = torch.from_numpy(np.ascontiguousarray(img))
        shape = list(tensor.shape)
        # (H, W[, C[, N]]) -> (N?, C?, H, W): put the spatial dims last for interpolate.
        shape_4d = shape[:2] + [1] * (4 - len(shape)) + shape[2:]
        tensor = tensor.view(shape_4d).permute(2, 3, 0, 1)
        tensor = F.interpolate(
            tensor,
            (self.new_h, self.new_w),
            mode=mode,
            align_corners=None if mode == "nearest" else False,
        )
        shape[:2] = (self.new_h, self.new_w)
        return tensor.permute(2, 3, 0, 1).reshape(shape).numpy()

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        # Label maps must not be interpolated between classes.
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> "ResizeTransform":
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)
