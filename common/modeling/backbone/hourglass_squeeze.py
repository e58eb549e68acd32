"""The hourglass of CornerNet-Squeeze (Law, Teng, Russakovsky, Deng, "CornerNet-Lite", 2019, Sec. 4.2;
[CNL] princeton-vl/CornerNet-Lite ``core/models/CornerNet_Squeeze.py``).

:class:`common.modeling.backbone.hourglass.StackedHourglass` with

* :class:`FireModule` blocks (SqueezeNet-style) instead of residuals in every hourglass level;
* ``ConvTranspose2d(d, d, 4, stride 2, pad 1)`` up-sampling (``up2``) instead of nearest x2;
* a third stride-2 residual in ``pre``: output stride 8 (a 511x511 input gives 64x64 maps);
* depth 4: dims [256, 256, 384, 384, 512], blocks per level [2, 2, 2, 2, 4] (the authors' config).

The ``pre``, ``cnvs``, ``inters``, ``inters_``, ``cnvs_`` parts stay residual / conv-BN as in
CornerNet. Key names equal the authors' under ``module.hg.`` with ``hgs`` -> ``kps``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.layers import ShapeSpec, get_norm

from .build import BACKBONE_REGISTRY
from .hourglass import StackedHourglass

__all__ = ["FireModule", "build_squeeze_hourglass_backbone", "squeeze_hourglass"]


class FireModule(nn.Module):
    """Fire module of CornerNet-Squeeze ([CNL] ``fire_module``, squeeze ratio 2).

    ``conv1`` 1x1 (in -> out/2, no bias) -> ``bn1`` (no ReLU) -> concatenation of ``conv_1x1``
    (1x1, out/2 -> out/2) and ``conv_3x3`` (3x3 depthwise, groups out/2), both with ``stride``
    and no bias -> ``bn2`` -> ``ReLU(bn2 + x)`` when ``stride == 1`` and ``in == out``, else
    ``ReLU(bn2)`` (no projection skip, hence no skip parameters).

    ``forward(x (N, in, H, W)) -> (N, out, ceil(H / stride), ceil(W / stride))``.

    Raises:
        ValueError: ``out_channels`` odd.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "BN"):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FireModule: out_channels must be even, got {out_channels}")
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn1 = get_norm(norm, half)
        self.conv_1x1 = nn.Conv2d(half, half, 1, stride=stride, bias=False)
        self.conv_3x3 = nn.Conv2d(half, half, 3, stride=stride, padding=1, groups=half, bias=False)
        self.bn2 = get_norm(norm, out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.bn1(self.conv1(x))
        out = self.bn2(torch.cat([self.conv_1x1(s), self.conv_3x3(s)], 1))
        return F.relu_(out + x) if self.residual else F.relu_(out)


def squeeze_hourglass(num_stacks: int = 2, dims=(256, 256, 384, 384, 512), modules=(2, 2, 2, 2, 4),
                      pre_channels: int = 128, cnv_dim: int = 256, norm: str = "BN",
                      prefix: str = "hg") -> StackedHourglass:
    """The CornerNet-Squeeze hourglass (module docstring); ``forward(x (N, 3, H, W))`` ->
    ``{prefix + str(i): (N, cnv_dim, H/8, W/8)}``."""
    return StackedHourglass(num_stacks, dims, modules, pre_channels, cnv_dim, norm, prefix,
                            block=FireModule, upsample="deconv", extra_pre_residuals=1)


@BACKBONE_REGISTRY.register()
def build_squeeze_hourglass_backbone(cfg, input_shape: ShapeSpec) -> StackedHourglass:
    """:func:`squeeze_hourglass` from ``MODEL.HOURGLASS`` (``NUM_STACKS``, ``DIMS``, ``MODULES``,
    ``PRE_CHANNELS``, ``CNV_DIM``, ``NORM``, ``OUT_FEATURE_PREFIX``; the CornerNet-Squeeze config
    sets DIMS [256, 256, 384, 384, 512] and MODULES [2, 2, 2, 2, 4]).

    Raises:
        KeyError: ``MODEL.HOURGLASS`` missing; ValueError: bad sizes or input channels != 3.
    """
    if "HOURGLASS" not in cfg.MODEL:
        raise KeyError("MODEL.HOURGLASS is missing: call add_hourglass_config(cfg) (or add_cornernet_config)")
    if input_shape.channels != 3:
        raise ValueError(f"build_squeeze_hourglass_backbone expects 3 input channels, got {input_shape.channels}")
    h = cfg.MODEL.HOURGLASS
    return squeeze_hourglass(int(h.NUM_STACKS), list(h.DIMS), list(h.MODULES), int(h.PRE_CHANNELS),
                             int(h.CNV_DIM), h.NORM, h.OUT_FEATURE_PREFIX)
