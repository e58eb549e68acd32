"""Register the builtin datasets when ``common.data`` is imported (``detectron2/data/datasets/builtin.py``).

- COCO 2017 under ``$DETECTRON2_DATASETS`` (default ``./datasets``)::

      coco/annotations/instances_{train,val}2017.json
      coco/{train,val}2017/

  names: ``coco_2017_train``, ``coco_2017_val``, ``coco_2017_val_100`` (the first 100 val
  images, ``instances_val2017_100.json``), ``coco_2017_test``, ``coco_2017_test-dev``.
- BCCD (bundled with this repository in ``<repo>/datasets/bccd``, found from this file's location
  so it works from any working directory): ``bccd_train`` (292 images), ``bccd_val`` (72),
  ``bccd_all`` (364); classes RBC, WBC, Platelets.

Registration only records paths; files are read when ``DatasetCatalog.get`` is called.
"""
from __future__ import annotations

import os
from pathlib import Path

from .builtin_meta import _get_builtin_metadata
from .coco import register_coco_instances

__all__ = ["register_all_coco", "register_all_bccd", "BCCD_ROOT"]

_PREDEFINED_SPLITS_COCO = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test": ("coco/test2017", "coco/annotations/image_info_test2017.json"),
    "coco_2017_test-dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}

# <repo>/common/data/datasets/builtin.py -> <repo>/datasets/bccd
BCCD_ROOT = Path(__file__).resolve().parents[3] / "datasets" / "bccd"

_PREDEFINED_SPLITS_BCCD = {
    "bccd_train": "annotations_train.json",
    "bccd_val": "annotations_val.json",
    "bccd_all": "annotations.json",
}


def register_all_coco(root: str) -> None:
    """Register the COCO 2017 splits with json/image paths under ``root``."""
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_COCO.items():
        register_coco_instances(
            name,
            _get_builtin_metadata("coco"),
            os.path.join(root, json_file) if "://" not in json_file else json_file,
            os.path.join(root, image_root),
        )


def register_all_bccd(root: os.PathLike = BCCD_ROOT) -> None:
    """Register the BCCD splits found in ``root`` (the bundled copy by default)."""
    root = Path(root)
    for name, json_file in _PREDEFINED_SPLITS_BCCD.items():
        register_coco_instances(name, _get_builtin_metadata("bccd"), str(root / json_file), str(root / "images"))


# Registered at import so that processes started by ``launch`` (which import common.data) see them.
_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_coco(_root)
register_all_bccd()
