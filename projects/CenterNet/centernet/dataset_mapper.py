"""CenterNet dataset mapper: the authors' augmentation on :class:`common.data.DatasetMapper`.

Training ([XZ] ``src/lib/datasets/sample/ctdet.py``): random scale (``max(H, W) x
INPUT.CENTERNET.SCALES``) and random-centre crop warped to ``INPUT.CENTERNET.TRAIN_SIZE`` (one
affine warp, black border), horizontal flip (``INPUT.RANDOM_FLIP``), colour jitter + PCA lighting
(``INPUT.CENTERNET.COLOR_AUG``). Boxes follow the same transforms and are clipped to the input;
boxes left empty are dropped; images without boxes are kept. As the authors, crowd annotations
are ordinary objects (``INPUT.CENTERNET.KEEP_CROWD``) and only the first 128 annotations of an
image, in file order, are used (``INPUT.CENTERNET.MAX_OBJECTS``; [XZ] ``max_objs``).

Test: resize keeping the aspect ratio (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``; a size of 0
keeps the original resolution, the authors' ``--keep_res``); the model pads the image centred to
``(H | 31) + 1`` x ``(W | 31) + 1`` (``MODEL.CENTERNET.TEST_PAD_CENTERED``). With
``MODEL.CENTERNET.TEST_INPUT_SIZE`` (the authors' ``fix_res``) the mapper does not resize and the
model warps the original image.
"""
from __future__ import annotations

from typing import Any, Dict, List

from common.data.dataset_mapper import ObjectListDatasetMapper
from common.data import transforms as T
from common.data.transforms.centernet_aug import flip_and_color_augmentations

__all__ = ["CenterNetDatasetMapper", "build_centernet_augmentation"]


def build_centernet_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The list of augmentations described in the module docstring.

    Raises:
        ValueError: bad ``INPUT.RANDOM_FLIP`` or ``INPUT.CENTERNET.*`` values.
    """
    if not is_train:
        if min(cfg.MODEL.CENTERNET.TEST_INPUT_SIZE) > 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    c = cfg.INPUT.CENTERNET
    augs: List[T.Augmentation] = [
        T.RandomCenterAffine(tuple(c.TRAIN_SIZE), tuple(c.SCALES), int(c.BORDER), bool(c.RANDOM_CROP),
                             float(c.SHIFT), float(c.SCALE))
    ]
    augs += flip_and_color_augmentations(cfg, c)
    return augs


class CenterNetDatasetMapper(ObjectListDatasetMapper):
    """:class:`DatasetMapper` with :func:`build_centernet_augmentation`; ``CenterNetDatasetMapper(cfg, is_train)``.

    Output as DatasetMapper; in training ``image`` is a float32 ``(3, h, w)`` tensor (colour
    jitter is not clipped, as the authors) of ``INPUT.CENTERNET.TRAIN_SIZE``.

    Args (besides DatasetMapper's): keep_crowd (``INPUT.CENTERNET.KEEP_CROWD``): train on
    ``iscrowd`` annotations as on any other; max_objects (``INPUT.CENTERNET.MAX_OBJECTS``): use
    the first ``max_objects`` annotations of the image (after the crowd filter; 0 = all).
    """

    config_node = "INPUT.CENTERNET"

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_centernet_augmentation(cfg, is_train)
        return ret
