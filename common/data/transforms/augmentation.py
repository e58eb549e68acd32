"""Augmentation = a (possibly random) policy that returns a deterministic Transform.

Mirrors ``detectron2/data/transforms/augmentation.py``: an :class:`Augmentation` looks at its
inputs (by default the image) and returns a :class:`Transform`, which is then applied to the
image, boxes and segmentation alike through :class:`AugInput`. Randomness lives only in
``get_transform``; the returned transform is deterministic and invertible (used by TTA).
"""
from __future__ import annotations

import inspect
import pprint
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from fvcore.transforms.transform import Transform, TransformList

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "StandardAugInput",
    "TransformGen",
    "apply_augmentations",
    "apply_transform_gens",
]


def _check_image(img: Any) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"Augmentations need a numpy array image, got {type(img)}")
    if np.issubdtype(img.dtype, np.integer) and img.dtype != np.uint8:
        raise TypeError(f"Integer images must be uint8, got {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(f"Images must have shape (H, W) or (H, W, C), got {img.shape}")


def _get_aug_input_args(aug: "Augmentation", aug_input: Any) -> list:
    """The attributes of ``aug_input`` named by ``aug.input_args`` (or by get_transform's params)."""
    names = aug.input_args
    if names is None:
        params = list(inspect.signature(aug.get_transform).parameters.values())
        # A single-argument get_transform receives the image whatever its parameter is called.
        if len(params) == 1:
            names = ("image",)
        else:
            names = []
            for p in params:
                if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise TypeError(
                        f"{type(aug)}.get_transform uses *args/**kwargs; set `input_args` explicitly"
                    )
                names.append(p.name)
            names = tuple(names)
    args = []
    for name in names:
        try:
            args.append(getattr(aug_input, name))
        except AttributeError as e:
            raise AttributeError(
                f"{type(aug).__name__}.get_transform needs input '{name}', but "
                f"{type(aug_input).__name__} has no such attribute"
            ) from e
    return args


class Augmentation:
    """Base class of augmentations (``detectron2.data.transforms.Augmentation``).

    Subclasses implement ``get_transform(self, image, ...) -> Transform`` whose parameter names
    say which attributes of the :class:`AugInput` they need (or set ``input_args``).
    Calling ``aug(aug_input)`` computes the transform, applies it to ``aug_input`` in place and
    returns it.
    """

    input_args: Optional[Tuple[str, ...]] = None

    def _init(self, params: Optional[dict] = None) -> None:
        if params:
            for k, v in params.items():
                if k != "self" and not k.startswith("_"):
                    setattr(self, k, v)

    def get_transform(self, *args: Any) -> Transform:
        raise NotImplementedError

    def __call__(self, aug_input: "AugInput") -> Transform:
        tfm = self.get_transform(*_get_aug_input_args(self, aug_input))
        if not isinstance(tfm, (Transform, TransformList)):
            raise TypeError(
                f"{type(self)}.get_transform must return a Transform, got {type(tfm)} instead"
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(self, low: float = 1.0, high: Optional[float] = None, size: Any = None):
        """Uniform float in [low, high); ``_rand_range()`` is uniform in [0, 1)."""
        if high is None:
            low, high = 0, low
        if size is None:
            size = []
        return np.random.uniform(low, high, size)

    def __repr__(self) -> str:
        # detectron2 style: only constructor arguments that differ from their defaults.
        try:
            sig = inspect.signature(self.__init__)
            cls_name = type(self).__name__
            argstr = []
            for name, param in sig.parameters.items():
                if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise AttributeError("cannot repr *args")
                if not hasattr(self, name):
                    raise AttributeError(f"attribute {name} not stored")
                attr = getattr(self, name)
                default = param.default
                if default is attr:
                    continue
                attr_str = pprint.pformat(attr)
                if "\n" in attr_str:
                    attr_str = "..."
                argstr.append(f"{name}={attr_str}")
            return "{}({})".format(cls_name, ", ".join(argstr))
        except AttributeError:
            return super().__repr__()

    __str__ = __repr__


TransformGen = Augmentation
"""Deprecated alias of :class:`Augmentation` (used by the SparseR-CNN/OneNet mappers)."""


class _TransformToAug(Augmentation):
    def __init__(self, tfm: Transform):
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)

    __str__ = __repr__


def _transform_to_aug(tfm_or_aug: Union[Transform, Augmentation]) -> Augmentation:
    """Wrap a Transform as an Augmentation that always returns it."""
    if isinstance(tfm_or_aug, Augmentation):
        return tfm_or_aug
    if not isinstance(tfm_or_aug, (Transform, TransformList)):
        raise TypeError(f"Expected an Augmentation or a Transform, got {type(tfm_or_aug)}")
    return _TransformToAug(tfm_or_aug)


class AugmentationList(Augmentation):
    """Apply a sequence of augmentations; returns the :class:`TransformList` of what was applied."""

    def __init__(self, augs: Sequence[Union[Augmentation, Transform]]):
        super().__init__()
        self.augs = [_transform_to_aug(x) for x in augs]

    def __call__(self, aug_input: "AugInput") -> TransformList:
        # Each augmentation sees the output of the previous one.
        return TransformList([aug(aug_input) for aug in self.augs])

    def __repr__(self) -> str:
        return "AugmentationList[{}]".format(", ".join(str(x) for x in self.augs))

    __str__ = __repr__


class AugInput:
    """The inputs an augmentation may look at and that a transform updates in place.

    Attributes:
        image: ``(H, W)`` or ``(H, W, C)`` array, uint8 or float.
        boxes: optional ``(N, 4)`` float XYXY_ABS boxes in pixels.
        sem_seg: optional ``(H, W)`` integer label map.

    Source: ``detectron2/data/transforms/augmentation.py`` (AugInput).
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: Optional[np.ndarray] = None,
        sem_seg: Optional[np.ndarray] = None,
    ):
        _check_image(image)
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Apply ``tfm`` to every attribute that is present."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(
        self, augmentations: Sequence[Union[Augmentation, Transform]]
    ) -> TransformList:
        return AugmentationList(augmentations)(self)


StandardAugInput = AugInput


def apply_augmentations(
    augmentations: Sequence[Union[Augmentation, Transform]], inputs: Union[np.ndarray, AugInput]
) -> Tuple[Union[np.ndarray, AugInput], TransformList]:
    """Apply ``augmentations`` to an image array or an :class:`AugInput`.

    Returns:
        ``(image, transforms)`` when given an array, ``(aug_input, transforms)`` otherwise.
    """
    image_only = isinstance(inputs, np.ndarray)
    if image_only:
        inputs = AugInput(inputs)
    tfms = inputs.apply_augmentations(augmentations)
    return (inputs.image if image_only else inputs), tfms


apply_transform_gens = apply_augmentations
"""Deprecated alias of :func:`apply_augmentations` (used by the SparseR-CNN/OneNet mappers)."""
