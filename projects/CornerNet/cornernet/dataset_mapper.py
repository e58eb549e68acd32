"""CornerNet dataset mapper: the authors' augmentation on :class:`common.data.DatasetMapper`.

Training (princeton-vl/CornerNet ``sample/coco.py`` ``kp_detection``; the same in CornerNet-Lite
and Duankaiwen/CenterNet): :class:`~common.data.transforms.centernet_aug.CornerNetRandomCrop`
(window of ``TRAIN_SIZE x choice(SCALES)`` around a random centre ``BORDER`` inside the image,
resized to ``TRAIN_SIZE``; or the centred full-image square), horizontal flip
(``INPUT.RANDOM_FLIP``), colour jitter + PCA lighting (``INPUT.CORNERNET.COLOR_AUG``). Boxes
follow; empty ones are dropped; images without boxes are kept. As the authors, crowd boxes are
ordinary objects and at most ``MAX_OBJECTS`` (128, ``max_tag_len``) are used.

Deviation: the authors flip boxes as ``x' = W - x - 1`` (their inclusive-pixel boxes);
detectron2's continuous ``x' = W - x`` is used here.

Test: no resize by default (``INPUT.MIN_SIZE_TEST 0``: the authors test at the original size);
the model pads each image centred to ``(H | 127) x (W | 127)``.
"""
from __future__ import annotations

from typing import Any, Dict, List

from common.data.dataset_mapper import ObjectListDatasetMapper
from common.data import transforms as T
from common.data.transforms.centernet_aug import CornerNetRandomCrop, flip_and_color_augmentations

__all__ = ["CornerNetDatasetMapper", "build_cornernet_augmentation"]


def build_cornernet_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The augmentations of the module docstring.

    Raises:
        ValueError: bad ``INPUT.RANDOM_FLIP`` or ``INPUT.CORNERNET.*`` values.
    """
    if not is_train:
        if int(cfg.INPUT.MIN_SIZE_TEST) == 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    c = cfg.INPUT.CORNERNET
    augs: List[T.Augmentation] = [
        CornerNetRandomCrop(tuple(c.TRAIN_SIZE), tuple(c.SCALES), int(c.BORDER), bool(c.RANDOM_CROP))
    ]
    augs += flip_and_color_augmentations(cfg, c)
    return augs


class CornerNetDatasetMapper(ObjectListDatasetMapper):
    """:class:`DatasetMapper` with :func:`build_cornernet_augmentation`;
    ``CornerNetDatasetMapper(cfg, is_train)``. In training ``image`` is a float32 ``(3, h, w)``
    tensor of ``INPUT.CORNERNET.TRAIN_SIZE`` (colour jitter unclipped, as the authors).

    Args (besides DatasetMapper's): keep_crowd (``INPUT.CORNERNET.KEEP_CROWD``), max_objects
    (``INPUT.CORNERNET.MAX_OBJECTS``; 0 = all).
    """

    config_node = "INPUT.CORNERNET"

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_cornernet_augmentation(cfg, is_train)
        return ret
