"""FCOS, ATSS and VarifocalNet on the ``common`` runtime.

Importing the package registers ``FCOS``, ``ATSS`` and ``VFNet`` in ``META_ARCH_REGISTRY``.
"""
from .config import add_atss_config, add_fcos_config, add_fcos_vfnet_config, add_vfnet_config
from .atss import ATSS, ATSSHead
from .fcos import FCOS, FCOSHead, FCOSModule
from .vfnet import VFNet, VFNetHead, star_dcn_offset

__all__ = ["ATSS", "ATSSHead", "VFNet", "VFNetHead", "star_dcn_offset", "FCOS", "FCOSHead", "FCOSModule", "add_atss_config", "add_fcos_config", "add_fcos_vfnet_config",
           "add_vfnet_config"]
