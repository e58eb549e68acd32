"""Sparse R-CNN (Sun et al., CVPR 2021) on the ``common`` runtime.

Importing the package registers ``SparseRCNN`` in ``META_ARCH_REGISTRY``; ``SparseRCNNWithTTA`` is
the authors' test-time augmentation (``TEST.AUG.ENABLED`` in ``train_net.py``).
"""
from .config import add_sparsercnn_config
from .dataset_mapper import SparseRCNNDatasetMapper
from .detector import SparseRCNN
from .test_time_augmentation import SparseRCNNWithTTA

__all__ = ["add_sparsercnn_config", "SparseRCNN", "SparseRCNNDatasetMapper", "SparseRCNNWithTTA"]
