"""Transforms and augmentations (``detectron2.data.transforms``), used as ``T``.

Deterministic transforms are fvcore's plus :class:`ResizeTransform`; augmentations decide the
random parameters and return those transforms.
"""
from .augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    StandardAugInput,
    TransformGen,
    apply_augmentations,
    apply_transform_gens,
)
from .augmentation_impl import (
    RandomApply,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomSaturation,
    Resize,
    ResizeShortestEdge,
)
from .centernet_aug import AffineTransform, ColorJitterLighting, ColorJitterLightingTransform, RandomCenterAffine, center_scale_affine_matrix  # noqa: F401,E501
from .transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "BlendTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "RandomApply",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomFlip",
    "RandomSaturation",
    "Resize",
    "ResizeShortestEdge",
    "ResizeTransform",
    "StandardAugInput",
    "Transform",
    "TransformGen",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
    "apply_transform_gens",
]
