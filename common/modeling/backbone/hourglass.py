"""Stacked Hourglass-104 of CornerNet / CenterNet (Newell et al. 2016; Law & Deng 2018).

Structure ([CN] ``models/py_utils/kp.py``, [XZ] ``src/lib/models/networks/large_hourglass.py``;
``dense_detectors.md`` 1.1 and 2.1):

* ``pre``: 7x7 conv s2 (3 -> 128) + BN + ReLU, then a stride-2 residual (128 -> 256): stride 4.
* ``NUM_STACKS`` hourglass modules of depth 5, dims [256, 256, 384, 384, 384, 512], residual
  counts [2, 2, 2, 2, 2, 4]; down-sampling by a stride-2 residual (no max-pool), up-sampling by
  nearest x2, merge by addition; after each module a 3x3 conv-BN-ReLU (``cnvs``).
* between stacks: ``inter = ReLU(BN(1x1(inter)) + BN(1x1(cnv)))`` then a residual.

Every stack's output is returned (``hg0``, ``hg1``, ...; all stride 4, 256 channels), so that a
detector can supervise them all and use the last one at test time. With ``out_merges`` (CornerNet-
Saccade, [CNL] ``core/models/py_utils/modules.py`` ``saccade_module``) every level's merge output
``up1 + up2`` is returned too, as ``hg<s>_merge<l>`` (level ``l = 0`` outermost: stride 4,
``dims[0]`` channels; level ``l``: stride ``4 * 2**l``, ``dims[l]`` channels). The detection heads (and
CornerNet's corner pooling) are not part of the backbone. Keys under ``MODEL.HOURGLASS`` come
from :func:`add_hourglass_config`.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.config import CfgNode as CN
from common.layers import ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["ConvBNReLU", "HourglassResidual", "HourglassModule", "StackedHourglass", "add_hourglass_config",
           "build_hourglass_backbone"]


def add_hourglass_config(cfg: CN) -> None:
    """Add ``MODEL.HOURGLASS`` (if missing): ``NUM_STACKS`` (2), ``DIMS``, ``MODULES`` (residuals per
    level), ``PRE_CHANNELS`` (128), ``CNV_DIM`` (256), ``NORM``, ``OUT_FEATURE_PREFIX`` ("hg")."""
    if "HOURGLASS" in cfg.MODEL:
        return
    cfg.MODEL.HOURGLASS = CN()
    h = cfg.MODEL.HOURGLASS
    h.NUM_STACKS = 2
    h.DIMS = [256, 256, 384, 384, 384, 512]
    h.MODULES = [2, 2, 2, 2, 2, 4]
    h.PRE_CHANNELS = 128
    h.CNV_DIM = 256
    h.NORM = "BN"
    h.OUT_FEATURE_PREFIX = "hg"
    h.OUT_MERGES = False  # also output every level's merge (CornerNet-Saccade's attention inputs)


class ConvBNReLU(nn.Module):
    """``k x k`` conv (padding (k-1)/2, bias only without BN) -> [BN] -> ReLU ([CN] ``convolution``)."""

    def __init__(self, k: int, in_channels: int, out_channels: int, stride: int = 1, with_bn: bool = True,
                 norm: str = "BN"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, k, stride, (k - 1) // 2, bias=not with_bn)
        self.bn = get_norm(norm, out_channels) if with_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(self.bn(self.conv(x)))


class HourglassResidual(nn.Module):
    """3x3 conv(stride)-BN-ReLU -> 3x3 conv-BN, skip (1x1 conv(stride)+BN if the shape changes), add, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "BN"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = get_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = get_norm(norm, out_channels)
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                      get_norm(norm, out_channels))
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.bn1(self.conv1(x)))
        return F.relu_(self.bn2(self.conv2(out)) + self.skip(x))


def _residuals(in_ch: int, out_ch: int, n: int, norm: str, first_stride: int = 1, reverse: bool = False,
               block: Callable[..., nn.Module] = None) -> nn.Sequential:
    """``n`` blocks (``block(in, out, stride, norm)``, default :class:`HourglassResidual`); the
    first (or, with ``reverse``, the last) changes ``in_ch -> out_ch``."""
    block = block or HourglassResidual
    if reverse:
        layers = [block(in_ch, in_ch, 1, norm) for _ in range(n - 1)]
        layers.append(block(in_ch, out_ch, 1, norm))
    else:
        layers = [block(in_ch, out_ch, first_stride, norm)]
        layers += [block(out_ch, out_ch, 1, norm) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class HourglassModule(nn.Module):
    """One recursive hourglass level ([CN] ``kp_module``, [CNL] ``hg_module``):
    ``up1(x) + up2(low3(low2(low1(x))))``.

    ``low1`` starts with a stride-2 block; ``low2`` is the next level (or ``modules[1]`` blocks at
    the innermost one). ``block`` builds every block (``block(in, out, stride, norm)``; residuals
    by default, CornerNet-Squeeze's fire modules); ``upsample`` is ``"nearest"`` (x2, no
    parameters) or ``"deconv"`` (CornerNet-Squeeze: ``up2 = ConvTranspose2d(d, d, 4, 2, 1)``).
    ``forward(x (N, dims[0], H, W)) -> same shape``; H, W must be divisible by ``2 ** n``.
    """

    def __init__(self, n: int, dims: Sequence[int], modules: Sequence[int], norm: str = "BN",
                 block: Optional[Callable[..., nn.Module]] = None, upsample: str = "nearest"):
        super().__init__()
        if upsample not in ("nearest", "deconv"):
            raise ValueError(f"hourglass upsample must be 'nearest' or 'deconv', got {upsample!r}")
        curr_mod, next_mod = modules[0], modules[1]
        curr_dim, next_dim = dims[0], dims[1]
        self.up1 = _residuals(curr_dim, curr_dim, curr_mod, norm, block=block)
        self.low1 = _residuals(curr_dim, next_dim, curr_mod, norm, first_stride=2, block=block)
        if n > 1:
            self.low2 = HourglassModule(n - 1, dims[1:], modules[1:], norm, block, upsample)
        else:
            self.low2 = _residuals(next_dim, next_dim, next_mod, norm, block=block)
        self.low3 = _residuals(next_dim, curr_dim, curr_mod, norm, reverse=True, block=block)
        self.up2 = nn.ConvTranspose2d(curr_dim, curr_dim, 4, 2, 1) if upsample == "deconv" else None

    def forward_merges(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every level's merge output, outermost first: ``[(N, dims[0], H, W), (N, dims[1], H/2,
        W/2), ...]`` (``n`` tensors; the first is :meth:`forward`'s output)."""
        up1 = self.up1(x)
        low1 = self.low1(x)
        if isinstance(self.low2, HourglassModule):
            inner = self.low2.forward_merges(low1)
            low2 = inner[0]
        else:
            inner, low2 = [], self.low2(low1)
        low = self.low3(low2)
        up2 = self.up2(low) if self.up2 is not None else F.interpolate(low, scale_factor=2.0, mode="nearest")
        return [up1 + up2] + inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(x)))
        if self.up2 is not None:
            return up1 + self.up2(low)
        return up1 + F.interpolate(low, scale_factor=2.0, mode="nearest")


class StackedHourglass(Backbone):
    """``pre`` + ``num_stacks`` hourglasses with intermediate connections.

    ``num_stacks = 2`` is Hourglass-104 (CornerNet, CenterNet-104); ``num_stacks = 1`` with the
    same dims/modules is the "Hourglass-52" of CenterNet-52 ([DK] ``models/CenterNet-52.py``: the
    same 5-level module, one stack, no ``inters``/``inters_``/``cnvs_``). ``block``/``upsample``
    (see :class:`HourglassModule`) and ``extra_pre_residuals`` (stride-2 residuals appended to
    ``pre``: output stride ``4 * 2 ** extra``) serve CornerNet-Squeeze
    (:mod:`common.modeling.backbone.hourglass_squeeze`).

    ``forward(x (N, 3, H, W))``, H and W multiples of ``stride * 2 ** (len(dims) - 1)`` (128 for
    Hourglass-104; odd sizes such as the authors' 511 also work, they round up at the first
    convolution) -> ``{prefix + str(i): (N, cnv_dim, H/stride, W/stride)}`` for every stack ``i``
    and, with ``out_merges``, ``{prefix + f"{i}_merge{l}": (N, dims[l], H/(stride 2**l), ...)}``
    for every level ``l < len(dims) - 1`` (CornerNet-Saccade; see the module docstring).
    """

    def __init__(self, num_stacks: int = 2, dims: Sequence[int] = (256, 256, 384, 384, 384, 512),
                 modules: Sequence[int] = (2, 2, 2, 2, 2, 4), pre_channels: int = 128, cnv_dim: int = 256,
                 norm: str = "BN", prefix: str = "hg", block: Optional[Callable[..., nn.Module]] = None,
                 upsample: str = "nearest", extra_pre_residuals: int = 0, out_merges: bool = False):
        super().__init__()
        if num_stacks < 1 or len(dims) != len(modules) or len(dims) < 2:
            raise ValueError(
                f"MODEL.HOURGLASS: NUM_STACKS ({num_stacks}) must be >= 1 and DIMS {list(dims)} / "
                f"MODULES {list(modules)} must have the same length >= 2"
            )
        curr_dim = dims[0]
        self.num_stacks = num_stacks
        self.depth = len(dims) - 1
        pre = [ConvBNReLU(7, 3, pre_channels, stride=2, norm=norm),
               HourglassResidual(pre_channels, curr_dim, stride=2, norm=norm)]
        pre += [HourglassResidual(curr_dim, curr_dim, stride=2, norm=norm) for _ in range(extra_pre_residuals)]
        self.pre = nn.Sequential(*pre)
        self.stride = 4 * 2 ** int(extra_pre_residuals)
        self.kps = nn.ModuleList([HourglassModule(self.depth, dims, modules, norm, block, upsample)
                                  for _ in range(num_stacks)])
        self.cnvs = nn.ModuleList([ConvBNReLU(3, curr_dim, cnv_dim, norm=norm) for _ in range(num_stacks)])
        self.inters = nn.ModuleList([HourglassResidual(curr_dim, curr_dim, norm=norm) for _ in range(num_stacks - 1)])
        self.inters_ = nn.ModuleList([
            nn.Sequential(nn.Conv2d(curr_dim, curr_dim, 1, bias=False), get_norm(norm, curr_dim))
            for _ in range(num_stacks - 1)
        ])
        self.cnvs_ = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cnv_dim, curr_dim, 1, bias=False), get_norm(norm, curr_dim))
            for _ in range(num_stacks - 1)
        ])
        self.out_merges = bool(out_merges)
        self._stack_features = [f"{prefix}{i}" for i in range(num_stacks)]
        self._out_features = list(self._stack_features)
        self._out_feature_channels = {f: cnv_dim for f in self._out_features}
        self._out_feature_strides = {f: self.stride for f in self._out_features}
        if self.out_merges:
            for i in range(num_stacks):
                for lvl in range(self.depth):
                    name = f"{prefix}{i}_merge{lvl}"
                    self._out_features.append(name)
                    self._out_feature_channels[name] = int(dims[lvl])
                    self._out_feature_strides[name] = self.stride * 2 ** lvl

    @property
    def size_divisibility(self) -> int:
        return self.stride * 2 ** self.depth

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        inter = self.pre(x)
        outs: Dict[str, torch.Tensor] = {}
        for i in range(self.num_stacks):
            if self.out_merges:
                merges = self.kps[i].forward_merges(inter)
                for lvl, m in enumerate(merges):
                    outs[f"{self._stack_features[i]}_merge{lvl}"] = m
                hg = merges[0]
            else:
                hg = self.kps[i](inter)
            cnv = self.cnvs[i](hg)
            outs[self._stack_features[i]] = cnv
            if i < self.num_stacks - 1:
                inter = F.relu_(self.inters_[i](inter) + self.cnvs_[i](cnv))
                inter = self.inters[i](inter)
        return outs


@BACKBONE_REGISTRY.register()
def build_hourglass_backbone(cfg, input_shape: ShapeSpec) -> StackedHourglass:
    """:class:`StackedHourglass` from ``MODEL.HOURGLASS`` (see :func:`add_hourglass_config`).

    Raises:
        KeyError: ``MODEL.HOURGLASS`` missing; ValueError: bad sizes or input channels != 3.
    """
    if "HOURGLASS" not in cfg.MODEL:
        raise KeyError("MODEL.HOURGLASS is missing: call add_hourglass_config(cfg) (or add_centernet_config)")
    if input_shape.channels != 3:
        raise ValueError(f"build_hourglass_backbone expects 3 input channels, got {input_shape.channels}")
    h = cfg.MODEL.HOURGLASS
    return StackedHourglass(int(h.NUM_STACKS), list(h.DIMS), list(h.MODULES), int(h.PRE_CHANNELS),
                            int(h.CNV_DIM), h.NORM, h.OUT_FEATURE_PREFIX,
                            out_merges=bool(h.get("OUT_MERGES", False)))
