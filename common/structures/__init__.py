"""Data structures shared by models, data loading and evaluation (detectron2 ``structures``)."""
from .boxes import Boxes, BoxMode, pairwise_intersection, pairwise_ioa, pairwise_iou
from .image_list import ImageList
from .instances import Instances

__all__ = [
    "Boxes",
    "BoxMode",
    "ImageList",
    "Instances",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
]
