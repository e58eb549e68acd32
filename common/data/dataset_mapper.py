"""The default dataset mapper: dataset dict -> model input dict (``detectron2/data/dataset_mapper.py``)."""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from common.config import configurable

from . import detection_utils as utils
from . import transforms as T

__all__ = ["DatasetMapper", "ObjectListDatasetMapper"]

logger = logging.getLogger(__name__)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` array -> ``(C, H, W)`` tensor of the same dtype (uint8 stays uint8)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def annotations_to_gt_instances(
    dataset_dict: Dict[str, Any],
    transforms: T.TransformList,
    image_shape: Tuple[int, int],
    *,
    use_instance_mask: bool = False,
    use_keypoint: bool = False,
) -> None:
    """Pop ``dataset_dict["annotations"]``, drop crowd objects, transform the rest and store
    ``dataset_dict["instances"]`` (``gt_boxes`` XYXY_ABS in the transformed image, ``gt_classes``),
    without empty boxes (side <= 1e-5 px). Shared by :class:`DatasetMapper` and
    :class:`~common.data.detr_dataset_mapper.DetrDatasetMapper`.
    """
    annos = []
    for anno in dataset_dict.pop("annotations"):
        if anno.get("iscrowd", 0) != 0:
            continue
        if not use_instance_mask:
            anno.pop("segmentation", None)
        if not use_keypoint:
            anno.pop("keypoints", None)
        annos.append(anno)
    annos = utils.transform_instance_annotations_batch(annos, transforms, image_shape)
    instances = utils.annotations_to_instances(annos, image_shape)
    dataset_dict["instances"] = utils.filter_empty_instances(instances)


class DatasetMapper:
    """Read the image, augment it and its boxes, and build the model input dict.

    Output dict: the input keys plus ``image``: ``(C, H, W)`` uint8 tensor in ``image_format``
    after augmentation; when training, ``instances``: :class:`Instances` with ``gt_boxes``
    (XYXY_ABS pixels of the augmented image) and ``gt_classes`` (int64); crowd objects and empty
    boxes removed. At test time the annotations are removed. ``height``/``width`` keep the
    original size (used to rescale predictions).

    Construct with ``DatasetMapper(cfg, is_train)`` (``INPUT.*``; ``INPUT.CROP.ENABLED`` adds a
    RandomCrop first when training) or explicit arguments.

    Raises (from ``__call__``): FileNotFoundError / ImageReadError naming the file,
    SizeMismatchError when the image size differs from the annotation.

    Source: ``detectron2/data/dataset_mapper.py`` (v0.6). Masks, keypoints and precomputed
    proposals are not supported (``use_instance_mask``/``use_keypoint`` must be False).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str,
        use_instance_mask: bool = False,
        use_keypoint: bool = False,
        instance_mask_format: str = "polygon",
        keypoint_hflip_indices: Optional[np.ndarray] = None,
        precomputed_proposal_topk: Optional[int] = None,
        recompute_boxes: bool = False,
    ):
        if use_instance_mask or use_keypoint or recompute_boxes:
            raise NotImplementedError(
                "DatasetMapper: instance masks / keypoints are not supported (MODEL.MASK_ON and "
                "MODEL.KEYPOINT_ON must be False)"
            )
        if precomputed_proposal_topk is not None:
            raise NotImplementedError("DatasetMapper: precomputed proposals (MODEL.LOAD_PROPOSALS) are not supported")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.proposal_topk = precomputed_proposal_topk
        self.recompute_boxes = recompute_boxes
        mode = "training" if is_train else "inference"
        logger.info("[DatasetMapper] Augmentations used in %s: %s", mode, augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        augs = utils.build_augmentation(cfg, is_train)
        if cfg.INPUT.CROP.ENABLED and is_train:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "use_keypoint": cfg.MODEL.KEYPOINT_ON,
            "recompute_boxes": False,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Map one dataset dict (not modified) to a model input dict."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)

        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg

        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            annotations_to_gt_instances(
                dataset_dict,
                transforms,
                image_shape,
                use_instance_mask=self.use_instance_mask,
                use_keypoint=self.use_keypoint,
            )
        return dataset_dict


class ObjectListDatasetMapper(DatasetMapper):
    """:class:`DatasetMapper` that, in training, applies the keypoint-heatmap detectors' rules to
    an image's object list before the usual mapping: crowd annotations are ordinary objects
    (``keep_crowd``) or dropped, and only the first ``max_objects`` annotations in file order are
    used (0 = all). Sources: xingyizhou/CenterNet ``src/lib/datasets/sample/ctdet.py``
    (``max_objs = 128``, all annotations of ``getAnnIds``); princeton-vl/CornerNet
    ``sample/coco.py`` (``max_tag_len = 128``).

    Subclasses set :attr:`config_node` (e.g. ``"INPUT.CENTERNET"``), whose ``KEEP_CROWD`` and
    ``MAX_OBJECTS`` keys ``from_config`` reads.

    Raises:
        ValueError: ``max_objects < 0`` (names ``<config_node>.MAX_OBJECTS``).
    """

    config_node: str = ""

    @configurable
    def __init__(self, is_train: bool, *, keep_crowd: bool = True, max_objects: int = 128, **kwargs):
        super().__init__(is_train, **kwargs)
        if max_objects < 0:
            raise ValueError(f"{self.config_node or 'max_objects'}.MAX_OBJECTS must be >= 0, got {max_objects}")
        self.keep_crowd = bool(keep_crowd)
        self.max_objects = int(max_objects)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        node = cfg
        for part in cls.config_node.split(".") if cls.config_node else ():
            node = node[part]
        if cls.config_node:
            ret["keep_crowd"] = bool(node.KEEP_CROWD)
            ret["max_objects"] = int(node.MAX_OBJECTS)
        return ret

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        if self.is_train and "annotations" in dataset_dict:
            dataset_dict = copy.copy(dataset_dict)
            annos = [dict(a) for a in dataset_dict["annotations"]]
            if self.keep_crowd:
                for a in annos:
                    a["iscrowd"] = 0
            else:
                annos = [a for a in annos if a.get("iscrowd", 0) == 0]
            if self.max_objects > 0:
                annos = annos[: self.max_objects]
            dataset_dict["annotations"] = annos
        return super().__call__(dataset_dict)
