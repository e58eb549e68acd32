"""Helpers shared by dataset mappers (``detectron2/data/detection_utils.py``).

Reading images, checking their size against the annotation, moving annotations through
transforms and turning them into :class:`~common.structures.Instances`. Boxes are processed as
``(N, 4)`` arrays, not one by one.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from fvcore.transforms.transform import Transform, TransformList
from iopath.common.file_io import g_pathmgr as PathManager
from PIL import Image, ImageOps, UnidentifiedImageError

from common.structures import Boxes, BoxMode, Instances

from . import transforms as T
from .catalog import MetadataCatalog

__all__ = [
    "SizeMismatchError",
    "ImageReadError",
    "convert_PIL_to_numpy",
    "convert_image_to_rgb",
    "read_image",
    "check_image_size",
    "transform_instance_annotations",
    "transform_instance_annotations_batch",
    "annotations_to_instances",
    "filter_empty_instances",
    "build_augmentation",
    "build_transform_gen",
    "check_metadata_consistency",
]

logger = logging.getLogger(__name__)


class SizeMismatchError(ValueError):
    """The image read from disk does not have the height/width recorded in the dataset dict."""


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or not an image)."""


# ITU-R BT.601 RGB -> YUV, as detectron2 (for INPUT.FORMAT = "YUV-BT.601").
_M_RGB2YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
)
_M_YUV2RGB = np.array([[1.0, 0.0, 1.13983], [1.0, -0.39465, -0.58060], [1.0, 2.03211, 0.0]])


def convert_PIL_to_numpy(image: Image.Image, format: Optional[str]) -> np.ndarray:
    """PIL image -> numpy array in ``format``.

    Args:
        format: "BGR", "RGB", "L", "YUV-BT.601", any PIL mode, or None (keep the file's mode).

    Returns:
        ``(H, W, C)`` uint8 array (``(H, W, 1)`` for "L"; float in [0,1]-based YUV for
        "YUV-BT.601"); with ``format=None`` the array has the PIL mode's natural shape.
    """
    if format is not None:
        pil_mode = "RGB" if format in ("BGR", "YUV-BT.601") else format
        image = image.convert(pil_mode)
    array = np.asarray(image)
    if format == "L":
        array = np.expand_dims(array, -1)
    elif format == "BGR":
        array = array[:, :, ::-1]
    elif format == "YUV-BT.601":
        array = np.dot(array / 255.0, _M_RGB2YUV.T)
    return array


def convert_image_to_rgb(image: Union[np.ndarray, torch.Tensor], format: str) -> np.ndarray:
    """An image in ``format`` ("BGR", "RGB", "L", "YUV-BT.601") -> ``(H, W, 3)`` RGB uint8 array.

    Accepts ``(H, W, C)`` numpy arrays or tensors (as the visualizer gets them).
    """
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if format == "BGR":
        image = image[:, :, [2, 1, 0]]
    elif format == "YUV-BT.601":
        image = np.dot(image, _M_YUV2RGB.T) * 255.0
    elif format == "L":
        image = np.repeat(image[:, :, :1], 3, axis=2)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def read_image(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """Read an image file into a numpy array, applying its EXIF orientation.

    Args:
        file_name: local path or any iopath URI.
        format: "BGR", "RGB", "L", "YUV-BT.601" or None; see :func:`convert_PIL_to_numpy`.

    Returns:
        ``(H, W, C)`` uint8 array (``(H, W, 1)`` for "L").

    Raises:
        FileNotFoundError: ``file_name`` does not exist (message names it).
        ImageReadError (an ``OSError``): the file cannot be decoded as an image (message names it).

    Source: ``detectron2/data/detection_utils.py`` (read_image; EXIF via PIL.ImageOps.exif_transpose).
    """
    if not PathManager.exists(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            # Decode inside the with-block (PIL is lazy) so that corrupt data fails here.
            image.load()
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"Cannot decode image file {file_name}: {e}") from e
    try:
        return convert_PIL_to_numpy(image, format)
    except ValueError as e:
        raise ValueError(f"Cannot convert image {file_name} to format {format!r} (INPUT.FORMAT): {e}") from e


def check_image_size(dataset_dict: Dict[str, Any], image: np.ndarray) -> None:
    """Check ``image.shape[:2]`` against ``dataset_dict["height"/"width"]``; fill them in if absent.

    Raises:
        SizeMismatchError (a ``ValueError``): the sizes differ (message names the file).
    """
    if "width" in dataset_dict or "height" in dataset_dict:
        image_wh = (image.shape[1], image.shape[0])
        expected_wh = (dataset_dict.get("width", image_wh[0]), dataset_dict.get("height", image_wh[1]))
        if tuple(image_wh) != tuple(expected_wh):
            raise SizeMismatchError(
                "Mismatched image shape for image {}: got (w, h) = {}, expected {} from the annotations. "
                "Please check the width/height in your annotation (and the image's EXIF orientation).".format(
                    dataset_dict.get("file_name", "<unknown>"), image_wh, expected_wh
                )
            )
    if "width" not in dataset_dict:
        dataset_dict["width"] = image.shape[1]
    if "height" not in dataset_dict:
        dataset_dict["height"] = image.shape[0]


def _as_transform_list(transforms: Union[Transform, Sequence[Transform]]) -> TransformList:
    if isinstance(transforms, (tuple, list)):
        return TransformList(list(transforms))
    if isinstance(transforms, TransformList):
        return transforms
    return TransformList([transforms])


def _transform_boxes_xyxy(
    boxes: np.ndarray, modes: Sequence[int], transforms: TransformList, image_size: Tuple[int, int]
) -> np.ndarray:
    """``(N, 4)`` boxes in per-row ``modes`` -> transformed, clipped ``(N, 4)`` XYXY_ABS."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    modes = np.asarray([int(m) for m in modes])
    xyxy = boxes.copy()
    for mode in np.unique(modes):  # one conversion per distinct mode (usually just one)
        sel = modes == mode
        xyxy[sel] = BoxMode.convert(boxes[sel], BoxMode(int(mode)), BoxMode.XYXY_ABS)
    xyxy = transforms.apply_box(xyxy).clip(min=0)
    h, w = image_size
    return np.minimum(xyxy, np.array([w, h, w, h], dtype=xyxy.dtype))


def _transform_segmentation(segm: Any, transforms: TransformList) -> Any:
    if isinstance(segm, list):
        polygons = [np.asarray(p).reshape(-1, 2) for p in segm]
        return [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
    if isinstance(segm, dict):
        mask = mask_util.decode(segm)
        return transforms.apply_segmentation(mask)
    if isinstance(segm, np.ndarray):
        return transforms.apply_segmentation(segm)
    raise ValueError(f"Cannot transform segmentation of type {type(segm)}")


def transform_instance_annotations(
    annotation: Dict[str, Any],
    transforms: Union[Transform, Sequence[Transform]],
    image_size: Tuple[int, int],
    *,
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Apply ``transforms`` to one annotation (in place; also returned).

    The box becomes XYXY_ABS, clipped to ``image_size`` = (h, w) of the transformed image;
    polygons / RLE segmentations are transformed too. Example: an ``HFlipTransform(400)`` maps
    ``[10, 10, 200, 300]`` (XYXY) to ``[200, 10, 390, 300]``.

    Raises:
        NotImplementedError: the annotation has keypoints (keypoint heads are not supported here).
    """
    return transform_instance_annotations_batch(
        [annotation], transforms, image_size, keypoint_hflip_indices=keypoint_hflip_indices
    )[0]


def transform_instance_annotations_batch(
    annotations: List[Dict[str, Any]],
    transforms: Union[Transform, Sequence[Transform]],
    image_size: Tuple[int, int],
    *,
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> List[Dict[str, Any]]:
    """Vectorised :func:`transform_instance_annotations` over all annotations of one image.

    All boxes go through the transforms as one ``(N, 4)`` array. Annotations are updated in
    place and returned in the same order.
    """
    if not annotations:
        return annotations
    transforms = _as_transform_list(transforms)
    if any("keypoints" in a for a in annotations):
        raise NotImplementedError(
            "Keypoint annotations are not supported by common.data; drop them (MODEL.KEYPOINT_ON=False)"
        )
    boxes = _transform_boxes_xyxy(
        np.asarray([a["bbox"] for a in annotations], dtype=np.float64),
        [a["bbox_mode"] for a in annotations],
        transforms,
        image_size,
    )
    for anno, box in zip(annotations, boxes):
        anno["bbox"] = box
        anno["bbox_mode"] = BoxMode.XYXY_ABS
        if "segmentation" in anno:
            anno["segmentation"] = _transform_segmentation(anno["segmentation"], transforms)
    return annotations


def annotations_to_instances(
    annos: List[Dict[str, Any]], image_size: Tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Annotations of one image -> :class:`Instances` with ``gt_boxes`` and ``gt_classes``.

    Args:
        annos: dicts with ``bbox``, ``bbox_mode`` and ``category_id`` (contiguous ids).
        image_size: (h, w).
        mask_format: unused (masks are not supported; segmentations are ignored).

    Returns:
        ``Instances(image_size)`` with ``gt_boxes``: :class:`Boxes` ``(N, 4)`` XYXY_ABS float32
        and ``gt_classes``: ``(N,)`` int64. An empty list gives N = 0.
    """
    if annos:
        boxes = np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 4)
        modes = np.asarray([int(a["bbox_mode"]) for a in annos])
        xyxy = boxes.copy()
        for mode in np.unique(modes):
            sel = modes == mode
            xyxy[sel] = BoxMode.convert(boxes[sel], BoxMode(int(mode)), BoxMode.XYXY_ABS)
        classes = [int(a["category_id"]) for a in annos]
    else:
        xyxy = np.zeros((0, 4), dtype=np.float32)
        classes = []
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.as_tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
    target.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return target


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
):
    """Drop instances whose box has width or height ``<= box_threshold`` pixels.

    Returns:
        the filtered :class:`Instances` (and the ``(N,)`` bool keep-mask if ``return_mask``).
    """
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box and instances.has("gt_boxes"):
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks") and hasattr(instances.gt_masks, "nonempty"):
        keep &= instances.gt_masks.nonempty()
    if return_mask:
        return instances[keep], keep
    return instances[keep]


def build_resize(cfg, is_train: bool) -> T.ResizeShortestEdge:
    """The config's shortest-edge resize.

    Train: ``INPUT.MIN_SIZE_TRAIN``, ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TRAIN_SAMPLING``;
    test: ``INPUT.MIN_SIZE_TEST``, ``MAX_SIZE_TEST``, "choice".

    Raises:
        ValueError: "range" sampling with other than 2 values in ``INPUT.MIN_SIZE_TRAIN``.
    """
    if is_train:
        min_size = cfg.INPUT.MIN_SIZE_TRAIN
        max_size = cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size = cfg.INPUT.MIN_SIZE_TEST
        max_size = cfg.INPUT.MAX_SIZE_TEST
        sample_style = "choice"
    if sample_style == "range" and len(min_size) != 2:
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN must have 2 values with 'range' sampling, got {min_size}")
    return T.ResizeShortestEdge(min_size, max_size, sample_style)


def build_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """[ResizeShortestEdge] (+ RandomFlip when training and ``INPUT.RANDOM_FLIP != "none"``).

    The resize is :func:`build_resize`.
    """
    augmentation: List[T.Augmentation] = [build_resize(cfg, is_train)]
    if is_train:
        flip = cfg.INPUT.RANDOM_FLIP
        if flip not in ("none", "horizontal", "vertical"):
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
        if flip != "none":
            augmentation.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augmentation


build_transform_gen = build_augmentation
"""Alias of :func:`build_augmentation` kept for old code."""


def check_metadata_consistency(key: str, dataset_names: Sequence[str]) -> None:
    """Check that ``key`` has the same metadata value in every dataset of ``dataset_names``.

    Raises:
        ValueError: the values differ (both datasets and values are logged).
    """
    if len(dataset_names) == 0:
        return
    entries = [MetadataCatalog.get(d).get(key) for d in list(dataset_names)]
    for name, entry in zip(dataset_names, entries):
        if entry != entries[0]:
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, name, entry)
            logger.error("Metadata '%s' for dataset '%s' is '%s'", key, dataset_names[0], entries[0])
            raise ValueError(f"Datasets {list(dataset_names)} have different metadata '{key}'!")
