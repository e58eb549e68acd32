"""Sparse R-CNN (Sun et al., CVPR 2021) on the ``common`` runtime.

Importing the package registers ``SparseRCNN`` in ``META_ARCH_REGISTRY``. Test-time augmentation
(the authors' ``SparseRCNNWithTTA``) is not ported yet.
"""
from .config import add_sparsercnn_config
from .dataset_mapper import SparseRCNNDatasetMapper
from .detector import SparseRCNN

__all__ = ["add_sparsercnn_config", "SparseRCNN", "SparseRCNNDatasetMapper"]
