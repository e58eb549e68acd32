"""OneNet (Sun et al., "OneNet: Towards End-to-End One-Stage Object Detection") on the ``common`` runtime.

Importing the package registers ``OneNet`` in ``META_ARCH_REGISTRY``.
"""
from .config import add_onenet_config
from .dataset_mapper import OneNetDatasetMapper
from .detector import OneNet

__all__ = ["add_onenet_config", "OneNet", "OneNetDatasetMapper"]
