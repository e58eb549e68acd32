"""``ShapeSpec``: the shape of a feature map, passed between backbones and heads."""
from collections import namedtuple
from typing import Optional

__all__ = ["ShapeSpec"]


class ShapeSpec(namedtuple("_ShapeSpec", ["channels", "height", "width", "stride"])):
    """Channels / height / width / stride (pixels of input per feature cell) of a tensor; any may be None.

    Source: ``detectron2/layers/shape_spec.py`` (v0.6 namedtuple form).
    """

    def __new__(
        cls,
        channels: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        stride: Optional[int] = None,
    ) -> "ShapeSpec":
        return super().__new__(cls, channels, height, width, stride)
