"""Training mapper of Sparse R-CNN: the shared DETR-style mapper.

The authors' ``SparseRCNNDatasetMapper`` is DETR's mapper (random horizontal flip + multi-scale
``ResizeShortestEdge``; with ``INPUT.CROP.ENABLED`` a 50 % branch resize-[400, 500, 600] ->
absolute-range crop (384, 600) -> resize; crowd objects, masks and keypoints dropped). That logic
lives once in :class:`common.data.DetrDatasetMapper`; this alias keeps the authors' name.
"""
from common.data import DetrDatasetMapper

__all__ = ["SparseRCNNDatasetMapper"]


class SparseRCNNDatasetMapper(DetrDatasetMapper):
    """Same behaviour and constructor as :class:`common.data.DetrDatasetMapper` (``(cfg, is_train=True)``)."""
