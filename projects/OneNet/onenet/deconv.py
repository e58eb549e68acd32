"""Upsampling neck of OneNet's CenterNet-style head: ResNet C2..C5 -> one stride-4 map.

Paper Sec. 4 "Backbone" (Fig. 3); authors' ``projects/OneNet/onenet/deconv.py``
(``CenternetDeconv``, ``DCNDeconvLayer``, ``CNDeconvLayer``). Module names match the authors' so
their checkpoints load (``head.deconv.deconv{1,2,3}.*``, ``head.deconv.lateral_conv{1,2,3}.*``,
``head.deconv.output_conv.*``).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.layers import Conv2d, DeformConv, ModulatedDeformConv

__all__ = ["DCNDeconvLayer", "CNDeconvLayer", "CenternetDeconv", "deconv_padding"]


def deconv_padding(kernel: int) -> Tuple[int, int]:
    """``(padding, output_padding)`` that make a stride-2 ConvTranspose2d exactly double H and W.

    Raises:
        ValueError: kernel not in {2, 3, 4} (``MODEL.OneNet.DECONV_KERNEL``).
    """
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"MODEL.OneNet.DECONV_KERNEL entries must be 2, 3 or 4, got {kernel}")


class _UpsampleMixin(nn.Module):
    def _make_upsample(self, channels: int, kernel: int) -> None:
        padding, output_padding = deconv_padding(kernel)
        self.up_sample = nn.ConvTranspose2d(channels, channels, kernel, stride=2, padding=padding,
                                            output_padding=output_padding, bias=False)
        self.up_bn = nn.BatchNorm2d(channels)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up_bn(self.up_sample(x)))


class DCNDeconvLayer(_UpsampleMixin):
    """3x3 deformable conv (v2 by default) -> BN -> ReLU -> 2x ConvTranspose2d -> BN -> ReLU.

    ``(N, C_in, H, W)`` -> ``(N, C_out, 2H, 2W)``. ``dcn_offset`` predicts ``27`` channels per
    location with ``modulate=True`` (18 offsets in torchvision/detectron2 layout, then 9 mask
    logits -> sigmoid), ``18`` otherwise. Keys: ``dcn_offset``, ``dcn`` (no bias), ``dcn_bn``,
    ``up_sample``, ``up_bn``.
    """

    def __init__(self, in_channels: int, out_channels: int, deconv_kernel: int = 4, modulate: bool = True) -> None:
        super().__init__()
        self.modulate = modulate
        self.dcn_offset = nn.Conv2d(in_channels, 27 if modulate else 18, kernel_size=3, padding=1)
        conv_cls = ModulatedDeformConv if modulate else DeformConv
        self.dcn = conv_cls(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.dcn_bn = nn.BatchNorm2d(out_channels)
        self._make_upsample(out_channels, deconv_kernel)
        nn.init.zeros_(self.dcn_offset.weight)
        nn.init.zeros_(self.dcn_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dcn_offset(x)
        if self.modulate:
            offset, mask = out[:, :18], out[:, 18:].sigmoid()
            x = self.dcn(x, offset, mask)
        else:
            x = self.dcn(x, out)
        return self._upsample(F.relu(self.dcn_bn(x)))


class CNDeconvLayer(_UpsampleMixin):
    """3x3 conv (with bias) -> BN -> ReLU -> 2x ConvTranspose2d -> BN -> ReLU (the ``nodcn`` neck).

    ``(N, C_in, H, W)`` -> ``(N, C_out, 2H, 2W)``. Keys: ``conv``, ``bn``, ``up_sample``, ``up_bn``.
    """

    def __init__(self, in_channels: int, out_channels: int, deconv_kernel: int = 4) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self._make_upsample(out_channels, deconv_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsample(F.relu(self.bn(self.conv(x))))


class CenternetDeconv(nn.Module):
    """Top-down deconvolution neck: C5 -> x2 + C4 -> x2 + C3 -> x2 + C2 -> 3x3 conv (stride 4).

    Args:
        channels: ``[C5 channels, out1, out2, out3]`` (``MODEL.OneNet.DECONV_CHANNEL``).
        kernels: three ConvTranspose2d kernel sizes (``MODEL.OneNet.DECONV_KERNEL``).
        lateral_channels: channels of ``[C4, C3, C2]`` (from the backbone's output shapes).
        dcn: deformable (``MODEL.OneNet.DCN``) or plain 3x3 conv in each deconv layer.
        modulate: modulated (v2) deformable conv (``MODEL.OneNet.MODULATE_DEFORM``).

    ``forward([C2, C3, C4, C5])`` -> ``(N, channels[-1], H/4, W/4)`` (input padded to a multiple of 32).

    Raises:
        ValueError: wrong number of channels/kernels.
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernels: Sequence[int],
        lateral_channels: Sequence[int],
        dcn: bool = True,
        modulate: bool = True,
    ) -> None:
        super().__init__()
        channels, kernels, lateral_channels = list(channels), list(kernels), list(lateral_channels)
        if len(channels) != 4 or len(kernels) != 3 or len(lateral_channels) != 3:
            raise ValueError(
                "MODEL.OneNet.DECONV_CHANNEL needs 4 values and DECONV_KERNEL 3, and the backbone must give "
                f"res2..res5; got {channels}, {kernels}, lateral {lateral_channels}"
            )

        def layer(cin: int, cout: int, k: int) -> nn.Module:
            return DCNDeconvLayer(cin, cout, k, modulate) if dcn else CNDeconvLayer(cin, cout, k)

        # Registration order = the authors' state-dict order.
        self.deconv1 = layer(channels[0], channels[1], kernels[0])
        self.lateral_conv1 = nn.Conv2d(lateral_channels[0], channels[1], kernel_size=1)
        self.deconv2 = layer(channels[1], channels[2], kernels[1])
        self.lateral_conv2 = nn.Conv2d(lateral_channels[1], channels[2], kernel_size=1)
        self.deconv3 = layer(channels[2], channels[3], kernels[2])
        self.lateral_conv3 = nn.Conv2d(lateral_channels[2], channels[3], kernel_size=1)
        self.output_conv = nn.Conv2d(channels[3], channels[3], kernel_size=3, padding=1)
        self.out_channels = channels[3]

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        """``features`` = ``[C2, C3, C4, C5]`` (strides 4, 8, 16, 32) -> stride-4 map."""
        c2, c3, c4, c5 = features
        x = self.deconv1(c5) + self.lateral_conv1(c4)
        x = self.deconv2(x) + self.lateral_conv2(c3)
        x = self.deconv3(x) + self.lateral_conv3(c2)
        return self.output_conv(x)
