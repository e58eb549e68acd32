"""AutoAssign on the ``common`` runtime.

Importing the package registers ``AutoAssign`` in ``META_ARCH_REGISTRY``.
"""
from .config import add_autoassign_config
from .detector import AutoAssign, AutoAssignHead

__all__ = ["AutoAssign", "AutoAssignHead", "add_autoassign_config"]
