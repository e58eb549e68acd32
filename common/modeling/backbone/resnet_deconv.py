"""ResNet + three up-sampling stages to stride 4 (CenterNet's ``resdcn_*`` and ``res_*`` backbones).

* ``resdcn`` ([XZ] ``src/lib/models/networks/resnet_dcn.py``; Zhou et al. 2019, Sec. 6
  "ResNet"): after ``res5``, three stages of modulated deformable 3x3 conv (DCNv2) -> BN -> ReLU
  -> 4x4 stride-2 transposed conv (bilinear init, no bias) -> BN -> ReLU, with 256, 128, 64
  channels.
* ``res`` ([XZ] ``msra_resnet.py``, Xiao et al. "Simple Baselines"): three 4x4 stride-2
  transposed convs (N(0, 0.001) init, no bias) -> BN -> ReLU, 256 channels each.

The ResNet body is :func:`~common.modeling.backbone.resnet.build_resnet_backbone` (detectron2
keys; torchvision ImageNet weights load through the checkpointer's renaming). Keys under
``MODEL.RESNET_DECONV`` are added by :func:`add_resnet_deconv_config`.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.config import CfgNode as CN
from common.layers import ModulatedDeformConv, ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = [
    "ModulatedDeformConvPack",
    "DeconvUpsampleStage",
    "ResNetDeconv",
    "add_resnet_deconv_config",
    "bilinear_upsample_init_",
    "build_resnet_deconv_backbone",
]


def add_resnet_deconv_config(cfg: CN) -> None:
    """Add ``MODEL.RESNET_DECONV`` (if missing): ``CHANNELS`` (out channels of the 3 stages),
    ``DEFORMABLE`` (DCNv2 3x3 before each transposed conv, i.e. ``resdcn``), ``NORM``,
    ``OUT_FEATURE`` (name of the stride-4 output)."""
    if "RESNET_DECONV" in cfg.MODEL:
        return
    cfg.MODEL.RESNET_DECONV = CN()
    cfg.MODEL.RESNET_DECONV.CHANNELS = [256, 128, 64]
    cfg.MODEL.RESNET_DECONV.DEFORMABLE = True
    cfg.MODEL.RESNET_DECONV.NORM = "BN"
    cfg.MODEL.RESNET_DECONV.OUT_FEATURE = "up"


def bilinear_upsample_init_(deconv: nn.ConvTranspose2d, diagonal: bool = False) -> None:
    """Write the bilinear kernel into a transposed conv (in place), as [XZ] ``fill_up_weights``.

    ``K[i, j] = (1 - |i / f - c|) (1 - |j / f - c|)``, ``f = ceil(k / 2)``, ``c = (2f - 1 - f % 2) / (2f)``
    (the FCN bilinear filter). The authors write ``weight[c, 0] = K`` for every input channel
    ``c`` (weight layout ``(in, out / groups, k, k)``): for a depth-wise deconv (DLA's ``IDAUp``,
    ``out / groups == 1``) that is a per-channel bilinear up-sampler; for a full deconv
    (``resnet_dcn.py``) output channel 0 receives ``K`` from every input channel and the other
    output channels keep PyTorch's default initialisation. This is the default here (training from
    ImageNet weights then starts as theirs). ``diagonal=True`` gives the per-channel up-sampler
    instead (``weight[c, c] = K``, other entries 0). Bias (if any) is zeroed.
    """
    w = deconv.weight  # (in, out / groups, k, k)
    k = w.shape[2]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = torch.arange(k, dtype=torch.float32)
    k1 = 1 - (t / f - c).abs()
    kernel = k1.view(-1, 1) * k1.view(1, -1)
    with torch.no_grad():
        if w.shape[1] == 1:
            w.copy_(kernel.expand_as(w))
        elif diagonal:
            w.zero_()
            n = min(w.shape[0], w.shape[1])
            idx = torch.arange(n)
            w[idx, idx] = kernel
        else:
            w[:, 0] = kernel
        if deconv.bias is not None:
            deconv.bias.zero_()


class ModulatedDeformConvPack(nn.Module):
    """DCNv2 with its own offset/mask predictor: ``conv_offset`` (3x3, 27 channels, zero init:
    the layer starts as a plain conv with mask 0.5) then ``ModulatedDeformConv`` initialised as
    DCNv2 (weight ``U(+-1/sqrt(fan_in))``, bias 0; ``weight_init="dcnv2"``).

    ``forward(x (N, C_in, H, W)) -> (N, C_out, H', W')``. Channels ``[0, 18)`` of ``conv_offset``
    are the offsets (torchvision layout: (dy, dx) per tap), ``[18, 27)`` the mask logits (sigmoid).
    Source: [XZ] ``DCNv2/dcn_v2.py`` ``DCN`` (one zero-initialised conv predicting offsets + mask).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, deformable_groups: int = 1, bias: bool = True):
        super().__init__()
        taps = deformable_groups * kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(in_channels, 3 * taps, kernel_size, stride, padding, dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.dcn = ModulatedDeformConv(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                       deformable_groups=deformable_groups, bias=bias, weight_init="dcnv2")
        self._taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.conv_offset(x)
        offset, mask = om[:, : 2 * self._taps], om[:, 2 * self._taps:]
        return self.dcn(x, offset, mask.sigmoid())


class DeconvUpsampleStage(nn.Module):
    """One x2 up-sampling stage: [DCNv2 3x3 -> norm -> ReLU ->] ConvT 4x4 s2 -> norm -> ReLU.

    ``forward(x (N, C_in, H, W)) -> (N, C_out, 2H, 2W)``. With ``deformable`` the transposed conv is
    initialised by the authors' ``fill_up_weights`` (:func:`bilinear_upsample_init_`, [XZ]
    ``resnet_dcn.py``); without it, N(0, 0.001) ([XZ] ``msra_resnet.py``). Norms start at 1 / 0.
    """

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = True, norm: str = "BN"):
        super().__init__()
        if deformable:
            self.dcn = ModulatedDeformConvPack(in_channels, out_channels, 3, padding=1)
            self.dcn_bn = get_norm(norm, out_channels)
            up_in = out_channels
        else:
            self.dcn = None
            up_in = in_channels
        self.up_sample = nn.ConvTranspose2d(up_in, out_channels, 4, stride=2, padding=1, output_padding=0, bias=False)
        self.up_bn = get_norm(norm, out_channels)
        if deformable:
            bilinear_upsample_init_(self.up_sample)
        else:
            nn.init.normal_(self.up_sample.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dcn is not None:
            x = F.relu_(self.dcn_bn(self.dcn(x)))
        return F.relu_(self.up_bn(self.up_sample(x)))


class ResNetDeconv(Backbone):
    """ResNet body + ``len(channels)`` x2 up-sampling stages; one output at stride 32 / 2^stages.

    Args:
        body: a :class:`Backbone` with a ``res5`` output (stride 32).
        channels: output channels of the up-sampling stages (``[256, 128, 64]`` for resdcn,
            ``[256, 256, 256]`` for res).
        deformable: DCNv2 before each transposed conv.
        out_feature: name of the output.

    ``forward(x (N, 3, H, W))`` with H, W multiples of 32 -> ``{out_feature: (N, channels[-1], H/4, W/4)}``.
    """

    def __init__(self, body: Backbone, channels: Sequence[int], deformable: bool = True, norm: str = "BN",
                 out_feature: str = "up"):
        super().__init__()
        if not channels:
            raise ValueError("MODEL.RESNET_DECONV.CHANNELS must list at least one stage")
        self.body = body
        in_ch = body.output_shape()["res5"].channels
        stages: List[nn.Module] = []
        for ch in channels:
            stages.append(DeconvUpsampleStage(in_ch, ch, deformable, norm))
            in_ch = ch
        self.deconv = nn.Sequential(*stages)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: int(channels[-1])}
        self._out_feature_strides = {out_feature: 32 // (2 ** len(channels))}

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {self._out_features[0]: self.deconv(self.body(x)["res5"])}


@BACKBONE_REGISTRY.register()
def build_resnet_deconv_backbone(cfg, input_shape: ShapeSpec) -> ResNetDeconv:
    """``MODEL.RESNETS`` body (``res5`` only) + ``MODEL.RESNET_DECONV`` up-sampling stages.

    Raises:
        KeyError: ``MODEL.RESNET_DECONV`` missing (call :func:`add_resnet_deconv_config`).
    """
    if "RESNET_DECONV" not in cfg.MODEL:
        raise KeyError("MODEL.RESNET_DECONV is missing: call add_resnet_deconv_config(cfg) (or add_centernet_config)")
    body_cfg = cfg.clone()
    body_cfg.defrost()
    body_cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    body = build_resnet_backbone(body_cfg, input_shape)
    d = cfg.MODEL.RESNET_DECONV
    return ResNetDeconv(body, list(d.CHANNELS), bool(d.DEFORMABLE), d.NORM, d.OUT_FEATURE)
