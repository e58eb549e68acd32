"""The mapper of DETR-style detectors, used by Sparse R-CNN and OneNet.

Both projects ship it as ``SparseRCNNDatasetMapper`` / ``OneNetDatasetMapper``
(``projects/*/dataset_mapper.py`` of the authors' repositories, identical logic to detectron2's
``projects/DETR/d2/detr/dataset_mapper.py``; PeizeSun/SparseR-CNN at 0e5028d,
``projects/SparseRCNN/sparsercnn/dataset_mapper.py``):

- train: ``[RandomFlip(), ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, sampling)]``;
  with ``INPUT.CROP.ENABLED``, half of the time (``np.random.rand() <= 0.5``) instead
  ``[RandomFlip(), ResizeShortestEdge([400, 500, 600], "choice"), RandomCrop(CROP.TYPE, CROP.SIZE),
  ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, sampling)]``;
- test: ``[ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST, "choice")]``.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional

import numpy as np

from common.config import configurable

from . import detection_utils as utils
from . import transforms as T
from .dataset_mapper import annotations_to_gt_instances, image_to_tensor

__all__ = ["DetrDatasetMapper", "build_transform_gen"]

logger = logging.getLogger(__name__)


def build_transform_gen(cfg, is_train: bool) -> List[T.Augmentation]:
    """``[RandomFlip(), ResizeShortestEdge(...)]`` for training, ``[ResizeShortestEdge(...)]`` for test.

    Unlike :func:`~common.data.detection_utils.build_augmentation`, the flip comes first and is
    always horizontal with p = 0.5 (``INPUT.RANDOM_FLIP`` is ignored, as in the authors' code).
    """
    tfm_gens: List[T.Augmentation] = [T.RandomFlip()] if is_train else []
    tfm_gens.append(utils.build_resize(cfg, is_train))
    return tfm_gens


class DetrDatasetMapper:
    """Dataset dict -> model input with the flip/multi-scale/optional-crop policy above.

    Args:
        is_train: training mode (annotations -> ``instances``) or test mode (annotations removed).
        augmentation: the default augmentation list (see :func:`build_transform_gen`).
        augmentation_with_crop: the alternative list used with probability ``crop_prob``, or None.
        image_format: ``INPUT.FORMAT`` ("RGB" for both projects).
        crop_prob: probability of the crop branch (0.5 in the authors' code).

    Output: like :class:`~common.data.DatasetMapper`: ``image`` ``(C, H, W)`` uint8 tensor;
    training adds ``instances`` with ``gt_boxes`` (XYXY_ABS pixels of the augmented image) and
    ``gt_classes`` (int64), crowd objects and empty boxes removed.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentation: List[T.Augmentation],
        augmentation_with_crop: Optional[List[T.Augmentation]],
        image_format: str,
        crop_prob: float = 0.5,
    ):
        self.is_train = is_train
        self.augmentation = list(augmentation)
        self.augmentation_with_crop = None if augmentation_with_crop is None else list(augmentation_with_crop)
        self.img_format = image_format
        self.crop_prob = crop_prob
        mode = "training" if is_train else "inference"
        logger.info(
            "[DetrDatasetMapper] Augmentations used in %s: %s, crop: %s",
            mode, self.augmentation, self.augmentation_with_crop,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        tfm_gens = build_transform_gen(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED and is_train:
            crop_gen = [
                T.ResizeShortestEdge([400, 500, 600], sample_style="choice"),
                T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
            ]
            # Flip, then the crop pipeline, then the usual final resize.
            augmentation_with_crop = tfm_gens[:-1] + crop_gen + tfm_gens[-1:]
        else:
            augmentation_with_crop = None
        return {
            "is_train": is_train,
            "augmentation": tfm_gens,
            "augmentation_with_crop": augmentation_with_crop,
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (not modified) to a model input dict."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.img_format)
        utils.check_image_size(dataset_dict, image)

        if self.augmentation_with_crop is None:
            augs = self.augmentation
        else:
            # Same draw and comparison as the authors: crop branch when rand() <= 0.5.
            augs = self.augmentation if np.random.rand() > self.crop_prob else self.augmentation_with_crop
        image, transforms = T.apply_transform_gens(augs, image)

        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            annotations_to_gt_instances(dataset_dict, transforms, image_shape)
        return dataset_dict
