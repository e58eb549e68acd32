"""Feature Pyramid Network (Lin et al., CVPR 2017) in detectron2's layout (``modeling/backbone/fpn.py``).

State-dict keys: ``fpn_lateral{s}`` / ``fpn_output{s}`` for every input stride ``2**s`` (input order),
then ``top_block.*``, then ``bottom_up.*``, exactly as detectron2 registers them.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from common.layers import Conv2d, ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7", "add_fpn_top_block_config", "build_fcos_resnet_fpn_backbone",
           "build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone"]


class LastLevelMaxPool(nn.Module):
    """Extra level ``p6`` = stride-2 subsampling (1x1 max-pool) of ``p5``; no parameters."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet extra levels: ``p6 = conv3x3_s2(in)``, ``p7 = conv3x3_s2(relu(p6))`` (keys ``p6``, ``p7``).

    The three variants the released dense detectors need (``in_feature`` / ``relu_before_p7``):

    * P6 from ``res5`` (C5), ReLU before P7: detectron2's RetinaNet, the released AutoAssign
      (cvpods of Dec. 2020, ``p6.weight`` ``(256, 2048, 3, 3)``);
    * P6 from ``p5``, ReLU before P7: FCOS (official ``use_P5``, AdelaiDet ``LastLevelP6P7(256, 256,
      "p5")``) and mmdetection VFNet (``add_extra_convs="on_output"``, ``relu_before_extra_convs``);
    * P6 from ``p5``, no ReLU: mmdetection ATSS (``relu_before_extra_convs=False``).

    Args:
        in_channels: channels of the input feature (2048 for ``res5`` of R-50; ``out_channels`` for ``p5``).
        out_channels: FPN channels.
        in_feature: name of the input feature: a bottom-up output (``"res5"``) or an FPN output
            (``"p5"``); :class:`FPN` looks it up in that order.
        relu_before_p7: apply ReLU to P6 before the P7 conv (P6 itself is returned without ReLU).

    Init: ``c2_xavier_fill`` (kaiming-uniform a=1, bias 0), as detectron2, AdelaiDet and the official
    FCOS (``fcos_core/modeling/backbone/fpn.py``) do.
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5", relu_before_p7: bool = True):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.relu_before_p7 = bool(relu_before_p7)
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            weight_init.c2_xavier_fill(module)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x``: ``(N, C_in, H, W)`` (C5 or P5) -> ``[p6 (N, C, H/2, W/2), p7 (N, C, H/4, W/4)]`` (ceil)."""
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        return [p6, p7]

    def extra_repr(self) -> str:
        return f"in_feature={self.in_feature!r}, relu_before_p7={self.relu_before_p7}"


def _check_strides_log2_contiguous(strides: Sequence[int]) -> None:
    for i, stride in enumerate(strides[1:], 1):
        if stride != 2 * strides[i - 1]:
            raise ValueError(f"FPN input strides {list(strides)} are not log2 contiguous (MODEL.FPN.IN_FEATURES)")


class FPN(Backbone):
    """Top-down pyramid over a bottom-up backbone; outputs ``p{s}`` with ``out_channels`` each.

    Args:
        bottom_up: backbone providing ``in_features``.
        in_features: bottom-up feature names, fine to coarse, with strides doubling (e.g. res2..res5).
        out_channels: channels of every output (``MODEL.FPN.OUT_CHANNELS``).
        norm: norm of lateral/output convs (``MODEL.FPN.NORM``); convs have a bias only when ``""``.
        top_block: optional module adding coarser levels (``LastLevelMaxPool`` / ``LastLevelP6P7``),
            fed with ``top_block.in_feature`` taken from the bottom-up outputs or the FPN outputs.
        fuse_type: ``"sum"`` or ``"avg"`` of lateral and upsampled top-down maps (``MODEL.FPN.FUSE_TYPE``).
        square_pad: if > 0, inputs are padded to squares of this size (``padding_constraints``).

    Raises:
        ValueError: unknown feature names, non-contiguous strides or unknown ``fuse_type``.

    Source: ``detectron2/modeling/backbone/fpn.py`` ``FPN``.
    """

    def __init__(self, bottom_up: Backbone, in_features: Sequence[str], out_channels: int, norm: str = "",
                 top_block: Optional[nn.Module] = None, fuse_type: str = "sum", square_pad: int = 0):
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"FPN bottom_up must be a Backbone, got {type(bottom_up)}")
        if not in_features:
            raise ValueError("FPN needs at least one input feature (MODEL.FPN.IN_FEATURES is empty)")
        if fuse_type not in ("avg", "sum"):
            raise ValueError(f"MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got {fuse_type!r}")
        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(
                f"MODEL.FPN.IN_FEATURES {missing} are not produced by the bottom-up backbone "
                f"(it outputs {list(input_shapes)}; check MODEL.RESNETS.OUT_FEATURES)"
            )
        strides = [input_shapes[f].stride for f in in_features]
        _check_strides_log2_contiguous(strides)

        lateral_convs, output_convs = [], []
        use_bias = norm == ""
        stage = 0
        for idx, f in enumerate(in_features):
            lateral_conv = Conv2d(input_shapes[f].channels, out_channels, kernel_size=1, bias=use_bias,
                                  norm=get_norm(norm, out_channels))
            output_conv = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=use_bias,
                                 norm=get_norm(norm, out_channels))
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            stage = int(math.log2(strides[idx]))
            self.add_module(f"fpn_lateral{stage}", lateral_conv)
            self.add_module(f"fpn_output{stage}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # plain lists (not ModuleList): no extra state-dict keys; coarse-to-fine for the top-down pass
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up

        self._out_feature_strides: Dict[str, int] = {f"p{int(math.log2(s))}": s for s in strides}
        if self.top_block is not None:
            for s in range(stage, stage + self.top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(N, C, H, W)`` with H, W multiples of :attr:`size_divisibility`.

        Returns:
            dict ``p{s}`` -> ``(N, out_channels, H / 2**s, W / 2**s)``, fine to coarse.

        Raises:
            ValueError: H or W is not a multiple of :attr:`size_divisibility` (the top-down 2x
                upsampling would not line up with the lateral maps).
        """
        div = self._size_divisibility
        if x.shape[-2] % div or x.shape[-1] % div:
            raise ValueError(
                f"FPN input size {tuple(x.shape[-2:])} must be divisible by {div}; pad the batch with "
                f"ImageList.from_tensors(images, size_divisibility=backbone.size_divisibility)"
            )
        bottom_up_features = self.bottom_up(x)
        results = []
        prev_features = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results.append(self.output_convs[0](prev_features))
        for idx, (lateral_conv, output_conv) in enumerate(zip(self.lateral_convs, self.output_convs)):
            if idx == 0:
                continue
            features = bottom_up_features[self.in_features[-idx - 1]]
            top_down_features = F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
            prev_features = lateral_conv(features) + top_down_features
            if self._fuse_type == "avg":
                prev_features = prev_features / 2
            results.insert(0, output_conv(prev_features))

        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_in))
        assert len(self._out_features) == len(results)
        return dict(zip(self._out_features, results))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (``MODEL.RESNETS``) + FPN (``MODEL.FPN``) + ``LastLevelMaxPool`` (p6).

    Source: ``detectron2/modeling/backbone/fpn.py`` ``build_resnet_fpn_backbone``.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN + ``LastLevelP6P7`` fed from ``res5`` (p6, p7), as RetinaNet / FCOS use.

    Source: ``detectron2/modeling/backbone/fpn.py`` ``build_retinanet_resnet_fpn_backbone``.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    if "res5" not in bottom_up.output_shape():
        raise ValueError("build_retinanet_resnet_fpn_backbone needs 'res5' in MODEL.RESNETS.OUT_FEATURES")
    in_channels_p6p7 = bottom_up.output_shape()["res5"].channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels_p6p7, out_channels),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def add_fpn_top_block_config(cfg) -> None:
    """Add the P6/P7 keys read by :func:`build_fcos_resnet_fpn_backbone` (idempotent):

    * ``MODEL.FPN.TOP_BLOCK_IN_FEATURE`` (default ``"p5"``): ``"p5"`` or ``"res5"``, the input of P6;
    * ``MODEL.FPN.TOP_BLOCK_RELU_BEFORE_P7`` (default True).
    """
    if "TOP_BLOCK_IN_FEATURE" not in cfg.MODEL.FPN:
        cfg.MODEL.FPN.TOP_BLOCK_IN_FEATURE = "p5"
    if "TOP_BLOCK_RELU_BEFORE_P7" not in cfg.MODEL.FPN:
        cfg.MODEL.FPN.TOP_BLOCK_RELU_BEFORE_P7 = True


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN (P3-P5 from ``MODEL.FPN.IN_FEATURES``) + :class:`LastLevelP6P7` (P6, P7) with the
    P6 source and the ReLU before P7 from ``MODEL.FPN.TOP_BLOCK_IN_FEATURE`` (``"p5"`` | ``"res5"``)
    and ``MODEL.FPN.TOP_BLOCK_RELU_BEFORE_P7`` (see :func:`add_fpn_top_block_config`; defaults
    ``"p5"`` and True when the keys are absent).

    The name is AdelaiDet's (``adet/modeling/backbone/fpn.py`` ``build_fcos_resnet_fpn_backbone``,
    whose ``TOP_LEVELS=2`` builds ``LastLevelP6P7(256, 256, "p5")``), so its configs work unchanged.

    Raises:
        ValueError: unknown ``TOP_BLOCK_IN_FEATURE``, or its feature is not built.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    in_feature = cfg.MODEL.FPN.get("TOP_BLOCK_IN_FEATURE", "p5")
    relu = cfg.MODEL.FPN.get("TOP_BLOCK_RELU_BEFORE_P7", True)
    if in_feature == "p5":
        if "res5" not in cfg.MODEL.FPN.IN_FEATURES:
            raise ValueError("MODEL.FPN.TOP_BLOCK_IN_FEATURE 'p5' needs 'res5' in MODEL.FPN.IN_FEATURES")
        in_channels = out_channels
    elif in_feature == "res5":
        if "res5" not in bottom_up.output_shape():
            raise ValueError("MODEL.FPN.TOP_BLOCK_IN_FEATURE 'res5' needs 'res5' in MODEL.RESNETS.OUT_FEATURES")
        in_channels = bottom_up.output_shape()["res5"].channels
    else:
        raise ValueError(f"MODEL.FPN.TOP_BLOCK_IN_FEATURE must be 'p5' or 'res5', got {in_feature!r}")
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels, out_channels, in_feature=in_feature, relu_before_p7=relu),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
