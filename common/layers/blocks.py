"""Base class of CNN blocks that know their in/out channels and stride (detectron2 ``layers/blocks.py``)."""
from torch import nn

from .batch_norm import FrozenBatchNorm2d

__all__ = ["CNNBlockBase"]


class CNNBlockBase(nn.Module):
    """A CNN block with attributes ``in_channels``, ``out_channels`` and ``stride`` (input px per output cell).

    Source: ``detectron2/layers/blocks.py``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stop gradients to every parameter and turn every BatchNorm/SyncBatchNorm into FrozenBatchNorm2d.

        Used by ``MODEL.BACKBONE.FREEZE_AT``. Returns self.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self
