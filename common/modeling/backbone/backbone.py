"""Abstract backbone interface (detectron2 ``modeling/backbone/backbone.py``)."""
from abc import ABCMeta, abstractmethod
from typing import Dict

import torch
from torch import nn

from common.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network mapping an image batch to named feature maps.

    Subclasses set ``_out_features`` (names), ``_out_feature_channels`` and
    ``_out_feature_strides`` (dicts name -> int) and implement :meth:`forward`.

    Source: ``detectron2/modeling/backbone/backbone.py``.
    """

    def __init__(self):
        super().__init__()

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(N, C, H, W)`` -> dict name -> ``(N, C_f, H / stride_f, W / stride_f)``."""

    @property
    def size_divisibility(self) -> int:
        """Input H and W must be multiples of this (0 = no constraint); e.g. FPN needs its largest stride."""
        return 0

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """Padding requirements for :meth:`ImageList.from_tensors` (``size_divisibility``, ``square_size``)."""
        return {}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Dict name -> :class:`ShapeSpec` (channels, stride) of every output feature."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
