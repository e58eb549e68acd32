"""COCO-format json <-> detectron2 dataset dicts (``detectron2/data/datasets/coco.py``).

A dataset dict (one per image) has ``file_name``, ``height``, ``width``, ``image_id`` and
``annotations``: a list of ``{"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS,
"category_id": int, "iscrowd": 0|1, ...}`` with ``category_id`` mapped to the contiguous range
``0..K-1`` (sorted COCO category ids) when a dataset name is given.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from iopath.common.file_io import file_lock, g_pathmgr as PathManager
from pycocotools.coco import COCO
import pycocotools.mask as mask_util

from common.structures import BoxMode

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = ["load_coco_json", "register_coco_instances", "convert_to_coco_dict", "convert_to_coco_json"]

logger = logging.getLogger(__name__)

# How many individual bad-box warnings to print before only counting them.
_MAX_BAD_BOX_WARNINGS = 10


def _load_coco_api(json_file: str) -> COCO:
    if not PathManager.exists(json_file):
        raise FileNotFoundError(f"COCO json file not found: {json_file}")
    local = PathManager.get_local_path(json_file)
    try:
        # pycocotools prints progress to stdout; keep the logs clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(local)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file} is not a valid json file: {e}") from e
    except (KeyError, TypeError) as e:
        raise ValueError(f"{json_file} is not in COCO format (needs 'images', 'annotations', 'categories'): {e!r}") from e


def _convert_segmentation(segm: Any) -> Optional[Any]:
    """Valid polygons / RLE of one annotation, or None when nothing usable is left."""
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            # Uncompressed RLE -> compressed RLE, the form pycocotools and detectron2 use.
            return mask_util.frPyObjects(segm, *segm["size"])
        return segm
    polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return polygons or None


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    extra_annotation_keys: Optional[Sequence[str]] = None,
) -> List[Dict[str, Any]]:
    """Load a COCO instances json as a list of detectron2 dataset dicts.

    Args:
        json_file: path of the COCO json.
        image_root: folder that ``images[*].file_name`` is relative to.
        dataset_name: when given, ``MetadataCatalog.get(dataset_name)`` receives
            ``thing_classes`` (category names sorted by id) and
            ``thing_dataset_id_to_contiguous_id``, and category ids are mapped to ``0..K-1``.
            Without it, ``category_id`` keeps the json's ids.
        extra_annotation_keys: annotation keys to copy besides iscrowd/bbox/keypoints/category_id.

    Returns:
        one dict per image (images without annotations included, with ``annotations == []``),
        sorted by image id. Boxes stay ``[x, y, w, h]`` with ``bbox_mode = BoxMode.XYWH_ABS``.
        Crowd annotations are kept (``iscrowd`` = 1); the mappers drop them.

    Bad input (messages name the json file, image id and annotation id):
        - a box with zero/negative width or height is dropped with a warning (and a count summary);
        - a ``category_id`` absent from ``categories`` raises ``ValueError``;
        - an annotation without ``bbox``, or an image without height/width, raises ``ValueError``;
        - a missing json raises ``FileNotFoundError``; missing image files are reported when read
          (:func:`common.data.detection_utils.read_image`).

    Source: ``detectron2/data/datasets/coco.py`` (load_coco_json).
    """
    coco_api = _load_coco_api(json_file)

    cat_ids = sorted(coco_api.getCatIds())
    id_map: Optional[Dict[int, int]] = None
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        cats = coco_api.loadCats(cat_ids)
        meta.thing_classes = [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
        if cat_ids and not (min(cat_ids) == 1 and max(cat_ids) == len(cat_ids)) and "coco" not in dataset_name:
            logger.warning("Category ids in %s are not in [1, #categories]; mapping them to 0..K-1.", json_file)
        id_map = {v: i for i, v in enumerate(cat_ids)}
        meta.thing_dataset_id_to_contiguous_id = id_map
    known_cat_ids = set(cat_ids)

    img_ids = sorted(coco_api.imgs.keys())
    imgs = coco_api.loadImgs(img_ids)
    anns = [coco_api.imgToAnns[img_id] for img_id in img_ids]
    num_matched = sum(len(x) for x in anns)
    if num_matched < len(coco_api.anns):
        logger.warning(
            "%s contains %d annotations, but only %d of them refer to images in the file.",
            json_file, len(coco_api.anns), num_matched,
        )
    ann_ids = [a["id"] for per_image in anns for a in per_image]
    if len(set(ann_ids)) != len(ann_ids):
        raise ValueError(f"Annotation ids in '{json_file}' are not unique!")

    ann_keys = ["iscrowd", "bbox", "keypoints", "category_id"] + list(extra_annotation_keys or [])
    num_bad_boxes = 0
    num_bad_segm = 0
    dataset_dicts = []
    for img_dict, anno_list in zip(imgs, anns):
        image_id = img_dict["id"]
        if "height" not in img_dict or "width" not in img_dict or "file_name" not in img_dict:
            raise ValueError(f"{json_file}: image id {image_id} lacks 'file_name', 'height' or 'width'")
        record = {
            "file_name": os.path.join(image_root, img_dict["file_name"]),
            "height": img_dict["height"],
            "width": img_dict["width"],
            "image_id": image_id,
        }
        objs = []
        for anno in anno_list:
            where = f"{json_file}: image id {image_id}, annotation id {anno.get('id')}"
            if anno.get("ignore", 0) != 0:
                raise ValueError(f"{where}: the 'ignore' field is not supported")
            bbox = anno.get("bbox")
            if bbox is None or len(bbox) != 4:
                raise ValueError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
                num_bad_boxes += 1
                if num_bad_boxes <= _MAX_BAD_BOX_WARNINGS:
                    logger.warning("%s: dropping box with a NaN, infinite or non-numeric value %s", where, bbox)
                continue
            if not (bbox[2] > 0 and bbox[3] > 0):
                num_bad_boxes += 1
                if num_bad_boxes <= _MAX_BAD_BOX_WARNINGS:
                    logger.warning("%s: dropping box with non-positive width/height %s", where, bbox)
                continue
            cat = anno.get("category_id")
            if cat not in known_cat_ids:
                raise ValueError(
                    f"{where}: category_id={cat} does not exist in the 'categories' of the json "
                    f"(known ids: {sorted(known_cat_ids)})"
                )
            obj = {key: anno[key] for key in ann_keys if key in anno}
            segm = anno.get("segmentation")
            if segm:
                segm = _convert_segmentation(segm)
                if segm is None:
                    num_bad_segm += 1
                    continue
                obj["segmentation"] = segm
            keypts = anno.get("keypoints")
            if keypts:
                # COCO keypoints are integer pixel indices; +0.5 makes them continuous coordinates.
                kp = np.asarray(keypts, dtype=np.float64).reshape(-1, 3)
                kp[:, :2] += (kp[:, 2:3] > 0) * 0.5
                obj["keypoints"] = kp.reshape(-1).tolist()
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            if id_map is not None:
                obj["category_id"] = id_map[cat]
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)

    if num_bad_boxes:
        logger.warning(
            "%s: dropped %d annotation(s) whose box has zero or negative width/height or a non-finite value.",
            json_file,
            num_bad_boxes,
        )
    if num_bad_segm:
        logger.warning("%s: dropped %d annotation(s) without a valid segmentation.", json_file, num_bad_segm)
    logger.info("Loaded %d images in COCO format from %s", len(dataset_dicts), json_file)
    return dataset_dicts


def _valid_xywh(bbox: Any) -> bool:
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        and bbox[2] > 0
        and bbox[3] > 0
    )


def drop_invalid_gt_boxes(coco_api: Any, json_file: str) -> int:
    """Remove from a loaded pycocotools ``COCO`` the annotations that :func:`load_coco_json` drops
    for training (a NaN/inf value, zero or negative width/height), with a warning naming the json,
    image id and annotation id, so that evaluation and training see the same ground truth.

    Returns:
        the number of annotations removed (the index is rebuilt when > 0).
    """
    anns = coco_api.dataset.get("annotations")
    if not anns:
        return 0
    bad = [a for a in anns if "bbox" in a and not _valid_xywh(a["bbox"])]
    if not bad:
        return 0
    for a in bad[:_MAX_BAD_BOX_WARNINGS]:
        logger.warning(
            "%s: image id %s, annotation id %s: box %s is dropped from the evaluation ground truth "
            "(NaN/inf or non-positive size), as in training",
            json_file, a.get("image_id"), a.get("id"), a.get("bbox"),
        )
    bad_ids = {id(a) for a in bad}
    coco_api.dataset["annotations"] = [a for a in anns if id(a) not in bad_ids]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_api.createIndex()
    return len(bad)


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Register a COCO-format instance detection dataset under ``name``.

    ``DatasetCatalog.get(name)`` then runs :func:`load_coco_json`; ``MetadataCatalog.get(name)``
    gets ``json_file``, ``image_root``, ``evaluator_type="coco"`` and ``metadata``.
    """
    if not isinstance(name, str):
        raise TypeError(f"Dataset name must be a str, got {type(name)}")
    if not isinstance(json_file, (str, os.PathLike)) or not isinstance(image_root, (str, os.PathLike)):
        raise TypeError(f"json_file and image_root of dataset '{name}' must be paths")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def _box_area_xywh(bbox: Sequence[float]) -> float:
    return float(bbox[2] * bbox[3])


def convert_to_coco_dict(dataset_name: str) -> Dict[str, Any]:
    """Convert a registered dataset (standard detectron2 dicts) into a COCO json dict.

    Category ids are mapped back through ``thing_dataset_id_to_contiguous_id`` when the metadata
    has it (else contiguous id + 0). Boxes are written as XYWH_ABS rounded to 3 decimals; ``area``
    is the mask area for segmentations, the box area otherwise. Used by ``COCOEvaluator`` for
    datasets without a ``json_file``.
    """
    dataset_dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        reverse_id_mapping = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
        reverse_id_mapper = lambda contiguous_id: reverse_id_mapping[contiguous_id]  # noqa: E731
    else:
        reverse_id_mapper = lambda contiguous_id: contiguous_id  # noqa: E731
    categories = [
        {"id": reverse_id_mapper(i), "name": name} for i, name in enumerate(metadata.thing_classes)
    ]

    logger.info("Converting dataset dicts into COCO format")
    coco_images = []
    coco_annotations = []
    for image_index, image_dict in enumerate(dataset_dicts):
        image_id = image_dict.get("image_id", image_index)
        coco_images.append(
            {
                "id": image_id,
                "width": int(image_dict["width"]),
                "height": int(image_dict["height"]),
                "file_name": str(image_dict["file_name"]),
            }
        )
        for annotation in image_dict.get("annotations", []):
            bbox = annotation["bbox"]
            if isinstance(bbox, np.ndarray):
                bbox = bbox.tolist()
            mode = BoxMode(annotation["bbox_mode"])
            if mode not in (BoxMode.XYWH_ABS, BoxMode.XYXY_ABS):
                raise ValueError(f"Image {image_id}: cannot convert bbox_mode {mode} to COCO json")
            bbox_xywh = list(BoxMode.convert(list(bbox), mode, BoxMode.XYWH_ABS))
            if "segmentation" in annotation:
                segm = annotation["segmentation"]
                if isinstance(segm, list):
                    rles = mask_util.frPyObjects(segm, int(image_dict["height"]), int(image_dict["width"]))
                    area = float(mask_util.area(mask_util.merge(rles)))
                else:
                    area = float(mask_util.area(segm))
            else:
                area = _box_area_xywh(bbox_xywh)
            coco_annotation = {
                "id": len(coco_annotations) + 1,
                "image_id": image_id,
                "bbox": [round(float(x), 3) for x in bbox_xywh],
                "area": area,
                "iscrowd": int(annotation.get("iscrowd", 0)),
                "category_id": int(reverse_id_mapper(annotation["category_id"])),
            }
            if "keypoints" in annotation:
                kp = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
                # Undo the +0.5 applied when loading, back to COCO's integer pixel indices.
                kp[:, :2] -= (kp[:, 2:3] > 0) * 0.5
                coco_annotation["keypoints"] = kp.reshape(-1).tolist()
                coco_annotation["num_keypoints"] = int((kp[:, 2] > 0).sum())
            if "segmentation" in annotation:
                segm = annotation["segmentation"]
                if isinstance(segm, dict) and isinstance(segm.get("counts"), bytes):
                    segm = dict(segm, counts=segm["counts"].decode("ascii"))
                coco_annotation["segmentation"] = segm
            coco_annotations.append(coco_annotation)

    logger.info("Conversion finished, #images: %d, #annotations: %d", len(coco_images), len(coco_annotations))
    info = {
        "date_created": str(datetime.datetime.now()),
        "description": "Automatically generated COCO json file for common.data (detectron2-compatible).",
    }
    coco_dict = {"info": info, "images": coco_images, "categories": categories, "licenses": None}
    if coco_annotations:
        coco_dict["annotations"] = coco_annotations
    return coco_dict


def convert_to_coco_json(dataset_name: str, output_file: str, allow_cached: bool = True) -> None:
    """Write :func:`convert_to_coco_dict` of ``dataset_name`` to ``output_file``.

    With ``allow_cached`` an existing ``output_file`` is reused (as detectron2 does; delete it
    when the dataset changes). A file lock guards concurrent writers (several ranks).
    """
    PathManager.mkdirs(os.path.dirname(output_file) or ".")
    with file_lock(output_file):
        if PathManager.exists(output_file) and allow_cached:
            logger.warning(
                "Using previously cached COCO format annotations at '%s'. "
                "You need to clear the cache file if your dataset has been modified.", output_file,
            )
            return
        logger.info("Converting annotations of dataset '%s' to COCO format ...", dataset_name)
        coco_dict = convert_to_coco_dict(dataset_name)
        logger.info("Caching COCO format annotations at '%s' ...", output_file)
        tmp_file = output_file + ".tmp"
        with PathManager.open(tmp_file, "w") as f:
            json.dump(coco_dict, f)
        # Atomic replace: a reader never sees a half-written json.
        os.replace(tmp_file, output_file)
