"""DLA-34 with deformable iterative/hierarchical up-sampling to stride 4 (CenterNet's ``dla_34``).

Base network: Yu et al., "Deep Layer Aggregation" (CVPR 2018); the fully-convolutional
up-sampling version with DCNv2 in every projection/aggregation node is CenterNet's
(xingyizhou/CenterNet at 4c50fd3a, ``src/lib/models/networks/pose_dla_dcn.py``; paper Sec. 6 "DLA"):

* base: 7x7 stride-1 conv (16 ch), ``level0`` 3x3 s1 (16), ``level1`` 3x3 s2 (32), then
  ``Tree`` levels 2-5 (levels [1, 2, 2, 1], channels [64, 128, 256, 512]) at strides 4..32.
* ``DLAUp`` over levels 2-5, then ``IDAUp`` over its three finest outputs: every ``proj_i`` /
  ``node_i`` is DCNv2 3x3 -> BN -> ReLU, every ``up_i`` a depth-wise transposed conv
  (k = 2f, stride f, bilinear init).

Output: ``{"dla": (N, 64, H/4, W/4)}``. Keys under ``MODEL.DLA`` come from :func:`add_dla_config`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.config import CfgNode as CN
from common.layers import ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet_deconv import ModulatedDeformConvPack, bilinear_upsample_init_

__all__ = ["DLA", "DLAUp", "IDAUp", "DLASeg", "add_dla_config", "build_dla_backbone"]

_DLA_SPECS = {34: ([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512])}


def add_dla_config(cfg: CN) -> None:
    """Add ``MODEL.DLA`` (if missing): ``DEPTH`` (34), ``NORM``, ``DEFORMABLE`` (DCNv2 nodes; plain
    3x3 convs otherwise), ``OUT_FEATURE`` ("dla")."""
    if "DLA" in cfg.MODEL:
        return
    cfg.MODEL.DLA = CN()
    cfg.MODEL.DLA.DEPTH = 34
    cfg.MODEL.DLA.NORM = "BN"
    cfg.MODEL.DLA.DEFORMABLE = True
    cfg.MODEL.DLA.OUT_FEATURE = "dla"


class _BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU -> 3x3 conv-BN, plus ``residual`` (default: the input), ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm: str = "BN"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = get_norm(norm, planes)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        residual = x if residual is None else residual
        out = F.relu_(self.bn1(self.conv1(x)))
        return F.relu_(self.bn2(self.conv2(out)) + residual)


class _Root(nn.Module):
    """Aggregation node: concat children -> 1x1 conv -> BN (-> + first child if residual) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool, norm: str = "BN"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.residual = residual

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            x = x + children[0]
        return F.relu_(x)


class _Tree(nn.Module):
    """Hierarchical deep aggregation tree of DLA (recursive; ``levels`` deep)."""

    def __init__(self, levels: int, in_channels: int, out_channels: int, stride: int = 1,
                 level_root: bool = False, root_dim: int = 0, root_residual: bool = False, norm: str = "BN"):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1 = _BasicBlock(in_channels, out_channels, stride, norm)
            self.tree2 = _BasicBlock(out_channels, out_channels, 1, norm)
            self.root = _Root(root_dim, out_channels, root_residual, norm)
        else:
            self.tree1 = _Tree(levels - 1, in_channels, out_channels, stride, root_dim=0,
                               root_residual=root_residual, norm=norm)
            self.tree2 = _Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels,
                               root_residual=root_residual, norm=norm)
        self.level_root = level_root
        self.levels = levels
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, 1, bias=False),
                                         get_norm(norm, out_channels))

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                children: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            return self.root(self.tree2(x1), x1, *children)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA(nn.Module):
    """DLA base (classification trunk without the classifier).

    ``forward(x (N, 3, H, W))`` -> list of 6 maps at strides 1, 2, 4, 8, 16, 32 with ``channels``.
    """

    def __init__(self, levels: Sequence[int], channels: Sequence[int], norm: str = "BN",
                 residual_root: bool = False):
        super().__init__()
        self.channels = list(channels)
        self.base_layer = nn.Sequential(nn.Conv2d(3, channels[0], 7, 1, 3, bias=False),
                                        get_norm(norm, channels[0]), nn.ReLU(inplace=True))
        self.level0 = self._conv_level(channels[0], channels[0], levels[0], 1, norm)
        self.level1 = self._conv_level(channels[0], channels[1], levels[1], 2, norm)
        self.level2 = _Tree(levels[2], channels[1], channels[2], 2, level_root=False,
                            root_residual=residual_root, norm=norm)
        self.level3 = _Tree(levels[3], channels[2], channels[3], 2, level_root=True,
                            root_residual=residual_root, norm=norm)
        self.level4 = _Tree(levels[4], channels[3], channels[4], 2, level_root=True,
                            root_residual=residual_root, norm=norm)
        self.level5 = _Tree(levels[5], channels[4], channels[5], 2, level_root=True,
                            root_residual=residual_root, norm=norm)

    @staticmethod
    def _conv_level(inplanes: int, planes: int, convs: int, stride: int, norm: str) -> nn.Sequential:
        mods: List[nn.Module] = []
        for i in range(convs):
            mods += [nn.Conv2d(inplanes, planes, 3, stride if i == 0 else 1, 1, bias=False),
                     get_norm(norm, planes), nn.ReLU(inplace=True)]
            inplanes = planes
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.base_layer(x)
        y = []
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            y.append(x)
        return y


class _ConvNode(nn.Module):
    """DCNv2 3x3 (or plain 3x3 conv) -> BN -> ReLU ([XZ] ``pose_dla_dcn.py`` ``DeformConv``)."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool, norm: str):
        super().__init__()
        if deformable:
            self.conv = ModulatedDeformConvPack(in_channels, out_channels, 3, padding=1)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.actf = nn.Sequential(get_norm(norm, out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


class IDAUp(nn.Module):
    """Iterative deep aggregation: ``layers[i] = node_i(up_i(proj_i(layers[i])) + layers[i-1])``.

    Args:
        out_channels: channels of the aggregated maps.
        channels: input channels of the maps, finest first.
        up_factors: up-sampling factor of each map to the finest one.
    """

    def __init__(self, out_channels: int, channels: Sequence[int], up_factors: Sequence[int],
                 deformable: bool = True, norm: str = "BN"):
        super().__init__()
        for i in range(1, len(channels)):
            f = int(up_factors[i])
            setattr(self, f"proj_{i}", _ConvNode(int(channels[i]), out_channels, deformable, norm))
            up = nn.ConvTranspose2d(out_channels, out_channels, f * 2, stride=f, padding=f // 2,
                                    output_padding=0, groups=out_channels, bias=False)
            bilinear_upsample_init_(up)
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", _ConvNode(out_channels, out_channels, deformable, norm))

    def forward(self, layers: List[torch.Tensor], startp: int, endp: int) -> None:
        """Aggregates ``layers[startp:endp]`` in place (the result is ``layers[endp - 1]``)."""
        for i in range(startp + 1, endp):
            k = i - startp
            layers[i] = getattr(self, f"up_{k}")(getattr(self, f"proj_{k}")(layers[i]))
            layers[i] = getattr(self, f"node_{k}")(layers[i] + layers[i - 1])


class DLAUp(nn.Module):
    """Hierarchical up-sampling: ``len(channels) - 1`` :class:`IDAUp` passes, coarse to fine.

    ``forward(layers)`` (all base outputs) -> list of maps, finest (stride of ``layers[startp]``) first.
    """

    def __init__(self, startp: int, channels: Sequence[int], scales: Sequence[int],
                 deformable: bool = True, norm: str = "BN"):
        super().__init__()
        self.startp = startp
        channels = list(channels)
        in_channels = list(channels)
        scales = np.array(scales, dtype=int)
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", IDAUp(channels[j], in_channels[j:], scales[j:] // scales[j], deformable, norm))
            scales[j + 1:] = scales[j]
            in_channels[j + 1:] = [channels[j] for _ in channels[j + 1:]]

    def forward(self, layers: List[torch.Tensor]) -> List[torch.Tensor]:
        layers = list(layers)
        out = [layers[-1]]
        for i in range(len(layers) - self.startp - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(Backbone):
    """DLA base + ``DLAUp`` + ``IDAUp`` to stride ``2 ** first_level`` (4).

    ``forward(x (N, 3, H, W))`` with H, W multiples of 32 -> ``{out_feature: (N, 64, H/4, W/4)}``.
    """

    def __init__(self, depth: int = 34, norm: str = "BN", deformable: bool = True, out_feature: str = "dla"):
        super().__init__()
        if depth not in _DLA_SPECS:
            raise ValueError(f"MODEL.DLA.DEPTH must be one of {sorted(_DLA_SPECS)}, got {depth}")
        levels, channels = _DLA_SPECS[depth]
        self.first_level, self.last_level = 2, 5
        self.base = DLA(levels, channels, norm)
        ch = channels[self.first_level:]
        self.dla_up = DLAUp(self.first_level, ch, [2 ** i for i in range(len(ch))], deformable, norm)
        out_ch = channels[self.first_level]
        n = self.last_level - self.first_level
        self.ida_up = IDAUp(out_ch, channels[self.first_level:self.last_level], [2 ** i for i in range(n)],
                            deformable, norm)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: out_ch}
        self._out_feature_strides = {out_feature: 2 ** self.first_level}

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.dla_up(self.base(x))
        y = [x[i] for i in range(self.last_level - self.first_level)]
        self.ida_up(y, 0, len(y))
        return {self._out_features[0]: y[-1]}


# Alias in BACKBONE_REGISTRY naming style.
@BACKBONE_REGISTRY.register()
def build_dla_backbone(cfg, input_shape: ShapeSpec) -> DLASeg:
    """:class:`DLASeg` from ``MODEL.DLA`` (see :func:`add_dla_config`).

    Raises:
        KeyError: ``MODEL.DLA`` missing; ValueError: unsupported depth or input channels != 3.
    """
    if "DLA" not in cfg.MODEL:
        raise KeyError("MODEL.DLA is missing: call add_dla_config(cfg) (or add_centernet_config)")
    if input_shape.channels != 3:
        raise ValueError(f"build_dla_backbone expects 3 input channels, got {input_shape.channels}")
    d = cfg.MODEL.DLA
    return DLASeg(int(d.DEPTH), d.NORM, bool(d.DEFORMABLE), d.OUT_FEATURE)
