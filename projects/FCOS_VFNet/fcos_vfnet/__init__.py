"""FCOS, ATSS and VarifocalNet on the ``common`` runtime.

Importing the package registers ``FCOS``, ``ATSS`` and ``VFNet`` in ``META_ARCH_REGISTRY``.
"""
from .config import add_atss_config, add_fcos_config, add_fcos_vfnet_config, add_vfnet_config
from .fcos import FCOS, FCOSHead, FCOSModule

__all__ = ["FCOS", "FCOSHead", "FCOSModule", "add_atss_config", "add_fcos_config", "add_fcos_vfnet_config",
           "add_vfnet_config"]
