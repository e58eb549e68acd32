"""Backbone registry and builder (detectron2 ``modeling/backbone/build.py``)."""
from typing import Optional

from fvcore.common.registry import Registry

from common.layers import ShapeSpec

from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones, which extract feature maps from images.

A registered object is called as ``obj(cfg, input_shape)`` with the full config and a
:class:`ShapeSpec` of the input (``channels`` = number of image channels), and must return an
instance of :class:`Backbone`. ``cfg.MODEL.BACKBONE.NAME`` selects it.
"""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: config node.
        input_shape: defaults to ``ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))``.

    Raises:
        KeyError: unknown ``MODEL.BACKBONE.NAME`` (fvcore lists the registered names).
        TypeError: the builder did not return a :class:`Backbone`.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"MODEL.BACKBONE.NAME={name!r} returned {type(backbone)}, not a Backbone")
    return backbone
