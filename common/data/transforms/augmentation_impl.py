"""Concrete augmentations (``detectron2/data/transforms/augmentation_impl.py``).

Random draws use the global ``np.random`` state, in the same order as detectron2, so a seeded run
samples the same sizes/crops/flips.
"""
from __future__ import annotations

import sys
from typing import Sequence, Tuple, Union

import numpy as np
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    VFlipTransform,
)
from PIL import Image

from .augmentation import Augmentation, _transform_to_aug
from .transform import ResizeTransform

__all__ = [
    "RandomApply",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomFlip",
    "RandomSaturation",
    "Resize",
    "ResizeShortestEdge",
]


class RandomApply(Augmentation):
    """Apply ``tfm_or_aug`` with probability ``prob``, else a :class:`NoOpTransform`."""

    def __init__(self, tfm_or_aug: Union[Augmentation, Transform], prob: float = 0.5):
        super().__init__()
        self.aug = _transform_to_aug(tfm_or_aug)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"Probability must be between 0.0 and 1.0 (given: {prob})")
        self.prob = prob

    def get_transform(self, *args) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()

    def __repr__(self) -> str:
        return f"RandomApply({self.aug!r}, prob={self.prob})"

    __str__ = __repr__


class RandomFlip(Augmentation):
    """Flip the image horizontally (default) or vertically with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        super().__init__()
        if horizontal and vertical:
            raise ValueError("RandomFlip: cannot flip both horizontally and vertically; use two RandomFlip.")
        if not horizontal and not vertical:
            raise ValueError("RandomFlip: at least one of horizontal or vertical must be True.")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize to a fixed ``shape`` = (h, w) (an int means a square)."""

    def __init__(self, shape: Union[int, Tuple[int, int]], interp: int = Image.BILINEAR):
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(shape)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        return ResizeTransform(image.shape[0], image.shape[1], self.shape[0], self.shape[1], self.interp)


class ResizeShortestEdge(Augmentation):
    """Scale so the short side equals a sampled length, keeping the long side <= ``max_size``.

    Args:
        short_edge_length: ``sample_style="range"``: (min, max) inclusive, sampled uniformly as an
            integer; ``"choice"``: a list of lengths, one picked uniformly. A length of 0 means no
            resize.
        max_size: cap on the long side in pixels.
        sample_style: "range" or "choice".
        interp: PIL resampling filter.

    Output size rule (:meth:`get_output_shape`): ``scale = size / min(h, w)``; if the long side
    then exceeds ``max_size``, rescale so it equals ``max_size``; round each side with
    ``int(x + 0.5)``. E.g. 480x640 with size 240 -> 240x320.
    """

    def __init__(
        self,
        short_edge_length: Union[int, Sequence[int]],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                "short_edge_length must be two values (min, max) when sample_style is 'range'! "
                f"Got {short_edge_length}! (INPUT.MIN_SIZE_TRAIN with INPUT.MIN_SIZE_TRAIN_SAMPLING='range')"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        newh, neww = ResizeShortestEdge.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, newh, neww, self.interp)

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int) -> Tuple[int, int]:
        """Output (h, w) for an input of (oldh, oldw); see the class docstring."""
        size = float(short_edge_length)
        scale = size / min(oldh, oldw)
        if oldh < oldw:
            newh, neww = size, scale * oldw
        else:
            newh, neww = scale * oldh, size
        longest = max(newh, neww)
        if longest > max_size:
            rescale = max_size * 1.0 / longest
            newh, neww = newh * rescale, neww * rescale
        return int(newh + 0.5), int(neww + 0.5)


class RandomCrop(Augmentation):
    """Crop a random window; its size is given by ``crop_type``/``crop_size`` (h, w).

    crop_type:
        - "relative": (h * crop_size[0], w * crop_size[1]), rounded with ``int(x + 0.5)``.
        - "relative_range": each factor uniform in [crop_size[i], 1].
        - "absolute": (min(crop_size[0], h), min(crop_size[1], w)) pixels.
        - "absolute_range": crop h uniform integer in [min(h, crop_size[0]), min(h, crop_size[1])],
          crop w likewise with w (crop_size = (min, max) pixels, same for both sides).
    The window position is uniform over the valid integer offsets.
    """

    _CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        super().__init__()
        if crop_type not in self._CROP_TYPES:
            raise ValueError(f"crop_type must be one of {self._CROP_TYPES}, got {crop_type!r} (INPUT.CROP.TYPE)")
        if len(crop_size) != 2:
            raise ValueError(f"crop_size must have 2 values, got {crop_size} (INPUT.CROP.SIZE)")
        if crop_type == "absolute_range" and crop_size[0] > crop_size[1]:
            raise ValueError(f"absolute_range crop_size must be (min, max), got {crop_size} (INPUT.CROP.SIZE)")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        croph, cropw = self.get_crop_size((h, w))
        assert h >= croph and w >= cropw, f"Shape computation in {self} has bugs."
        h0 = np.random.randint(h - croph + 1)
        w0 = np.random.randint(w - cropw + 1)
        return CropTransform(w0, h0, cropw, croph)

    def get_crop_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """(crop_h, crop_w) in pixels for an image of size (h, w)."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            lo = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = lo + np.random.rand(2) * (1 - lo)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(self.crop_size[0], h), min(self.crop_size[1], w)
        ch = np.random.randint(min(h, self.crop_size[0]), min(h, self.crop_size[1]) + 1)
        cw = np.random.randint(min(w, self.crop_size[0]), min(w, self.crop_size[1]) + 1)
        return int(ch), int(cw)


class RandomBrightness(Augmentation):
    """Scale intensities by a factor uniform in [intensity_min, intensity_max] (1 = unchanged)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0, src_weight=1 - w, dst_weight=w)


class RandomContrast(Augmentation):
    """Blend with the image mean by a factor uniform in [intensity_min, intensity_max]."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=image.mean(), src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blend an RGB image with its grayscale (ITU-R 601 luma) by a uniform factor."""

    def __init__(self, intensity_min: float, intensity_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"RandomSaturation only works on RGB images, got shape {image.shape}")
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        grayscale = image.dot([0.299, 0.587, 0.114])[:, :, np.newaxis]
        return BlendTransform(src_image=grayscale, src_weight=1 - w, dst_weight=w)
