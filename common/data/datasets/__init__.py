"""Dataset loaders and the builtin dataset registrations (``detectron2.data.datasets``)."""
# Importing .builtin registers the builtin datasets (bccd_*, coco_2017_*).
from .builtin import register_all_bccd, register_all_coco
from .coco import convert_to_coco_dict, convert_to_coco_json, load_coco_json, register_coco_instances

__all__ = [
    "convert_to_coco_dict",
    "convert_to_coco_json",
    "load_coco_json",
    "register_all_bccd",
    "register_all_coco",
    "register_coco_instances",
]
