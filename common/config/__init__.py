"""Config system: detectron2's ``get_cfg``, ``CfgNode`` and ``configurable``."""
from .config import CfgNode, ConfigKeyError, configurable, get_cfg, global_cfg, set_global_cfg

__all__ = ["CfgNode", "ConfigKeyError", "configurable", "get_cfg", "global_cfg", "set_global_cfg"]
