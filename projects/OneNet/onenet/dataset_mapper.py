"""Training mapper of OneNet: the shared DETR-style mapper under the authors' name.

The authors' ``OneNetDatasetMapper`` has the same logic as Sparse R-CNN's (random horizontal flip,
multi-scale ``ResizeShortestEdge``, optional 50 % crop branch); it lives once in
:class:`common.data.DetrDatasetMapper`.
"""
from common.data import DetrDatasetMapper

__all__ = ["OneNetDatasetMapper"]


class OneNetDatasetMapper(DetrDatasetMapper):
    """Same behaviour and constructor as :class:`common.data.DetrDatasetMapper` (``(cfg, is_train=True)``)."""
