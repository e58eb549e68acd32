"""ResNet backbones in detectron2's layout (``modeling/backbone/resnet.py``).

Attribute names and registration order reproduce detectron2's state-dict keys exactly
(``stem.conv1.*``, ``res2.0.shortcut.*`` before ``res2.0.conv1.*`` ...), so detectron2 / Sparse R-CNN /
OneNet checkpoints load without renaming. Reference: He et al., "Deep Residual Learning", 2016.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from common.layers import CNNBlockBase, Conv2d, DeformConv, ModulatedDeformConv, ShapeSpec, get_norm

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "ResNetBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "BasicStem",
    "ResNet",
    "make_stage",
    "build_resnet_backbone",
]

# Blocks per stage res2..res5 for each supported depth.
_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
_STAGE_INDEX = {"res2": 1, "res3": 2, "res4": 3, "res5": 4}



def _projection_shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[Conv2d]:
    """1x1 projection (with norm) when the block changes width, else None (identity shortcut).

    Created before ``conv1`` in every block, so state-dict keys keep detectron2's order.
    """
    if in_channels == out_channels:
        return None
    return Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                  norm=get_norm(norm, out_channels))

class BasicBlock(CNNBlockBase):
    """Two 3x3 convs with a residual (ResNet-18/34). Keys: ``shortcut`` (if needed), ``conv1``, ``conv2``.

    ``shortcut`` is a 1x1 projection (with norm) only when ``in_channels != out_channels``.
    Source: ``detectron2/modeling/backbone/resnet.py`` ``BasicBlock``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(CNNBlockBase):
    """1x1 -> 3x3 -> 1x1 residual block (ResNet-50+). Keys: ``shortcut`` (if needed), ``conv1..3``.

    Args:
        bottleneck_channels: width of the 3x3 conv.
        stride: spatial stride of the block (on the 1x1 if ``stride_in_1x1`` (MSRA style), else on the 3x3
            (torchvision style)).
        num_groups: groups of the 3x3 conv (ResNeXt).
        dilation: dilation (and padding) of the 3x3 conv.

    Source: ``detectron2/modeling/backbone/resnet.py`` ``BottleneckBlock``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "BN", stride_in_1x1: bool = False, dilation: int = 1):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3,
                            padding=dilation, bias=False, groups=num_groups, dilation=dilation,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class DeformBottleneckBlock(CNNBlockBase):
    """Bottleneck block whose 3x3 conv is deformable (DCNv1, or DCNv2 if ``deform_modulated``).

    Keys: ``shortcut``, ``conv1``, ``conv2_offset`` (plain 3x3 conv predicting 18 (or 27 with mask)
    channels per deformable group, zero-initialised so training starts as a regular conv),
    ``conv2`` (:class:`DeformConv` / :class:`ModulatedDeformConv`, no bias), ``conv3``.
    For the modulated version the offset conv output is split into thirds (x-part, y-part, mask) as in
    detectron2: offsets = channels ``[0, 2/3)``, mask = ``sigmoid`` of the last third.

    Source: ``detectron2/modeling/backbone/resnet.py`` ``DeformBottleneckBlock``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "BN", stride_in_1x1: bool = False, dilation: int = 1,
                 deform_modulated: bool = False, deform_num_groups: int = 1):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        deform_conv_op = ModulatedDeformConv if deform_modulated else DeformConv
        offset_channels = 27 if deform_modulated else 18
        self.conv2_offset = Conv2d(bottleneck_channels, offset_channels * deform_num_groups, kernel_size=3,
                                   stride=stride_3x3, padding=dilation, dilation=dilation)
        self.conv2 = deform_conv_op(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3,
                                    padding=dilation, bias=False, groups=num_groups, dilation=dilation,
                                    deformable_groups=deform_num_groups,
                                    norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            offset_x, offset_y, mask = torch.chunk(self.conv2_offset(out), 3, dim=1)
            out = self.conv2(out, torch.cat((offset_x, offset_y), dim=1), mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BasicStem(CNNBlockBase):
    """7x7 stride-2 conv (key ``conv1``) + ReLU + 3x3 stride-2 max-pool: total stride 4.

    Source: ``detectron2/modeling/backbone/resnet.py`` ``BasicStem``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """ResNet feature extractor with outputs named ``stem``, ``res2`` .. ``res5`` (strides 4, 4, 8, 16, 32).

    Args:
        stem: a :class:`CNNBlockBase` (usually :class:`BasicStem`).
        stages: list of stages, each a list of :class:`CNNBlockBase`; registered as ``res2``, ``res3``, ...
        num_classes: if given, adds global average pooling + ``linear`` classifier (output ``"linear"``).
        out_features: names to return from :meth:`forward`; stages after the deepest one are not
            built. Default: the last layer.
        freeze_at: see :meth:`freeze`.

    Raises:
        ValueError: an unknown name in ``out_features``.

    Source: ``detectron2/modeling/backbone/resnet.py`` ``ResNet``.
    """

    def __init__(self, stem: nn.Module, stages: List[List[CNNBlockBase]], num_classes: Optional[int] = None,
                 out_features: Optional[Sequence[str]] = None, freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes

        current_stride = self.stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": self.stem.out_channels}

        if out_features is not None:
            # keep only the stages needed for the deepest requested output
            num_stages = max(_STAGE_INDEX.get(f, 0) for f in out_features)
            stages = stages[:num_stages]

        self.stage_names: List[str] = []
        self.stages: List[nn.Module] = []
        for i, blocks in enumerate(stages):
            if len(blocks) == 0:
                raise ValueError(f"ResNet stage res{i + 2} has no blocks")
            for block in blocks:
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(f"ResNet blocks must be CNNBlockBase, got {type(block)}")
            name = "res" + str(i + 2)
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            current_stride = int(current_stride * np.prod([b.stride for b in blocks]))
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self.stage_names = tuple(self.stage_names)  # type: ignore[assignment]
        name = self.stage_names[-1] if self.stage_names else "stem"

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(self._out_feature_channels[name], num_classes)
            nn.init.normal_(self.linear.weight, std=0.01)
            name = "linear"

        if out_features is None:
            out_features = [name]
        self._out_features = list(out_features)
        children = [x[0] for x in self.named_children()]
        for f in self._out_features:
            if f not in children:
                raise ValueError(f"ResNet out_features has {f!r}; available: {', '.join(children)}")
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(N, C, H, W)`` -> dict of the requested outputs, ``res_k`` of shape ``(N, C_k, H/s_k, W/s_k)``.

        Raises:
            ValueError: input is not 4-D.
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet takes an input of shape (N, C, H, W), got {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = torch.flatten(self.avgpool(x), 1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the first ``freeze_at`` stages (1 = stem, 2 = stem + res2, ...).

        Frozen blocks get ``requires_grad=False`` and their BatchNorms become FrozenBatchNorm2d
        (``MODEL.BACKBONE.FREEZE_AT``). Returns self.
        """
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(block_class: Type[CNNBlockBase], num_blocks: int, *, in_channels: int, out_channels: int,
                   **kwargs: Any) -> List[CNNBlockBase]:
        """Create the blocks of one stage.

        Keyword arguments ending in ``_per_block`` must be lists of length ``num_blocks`` and give
        block i the i-th value under the name without the suffix (e.g. ``stride_per_block=[2, 1, 1]``);
        the others are passed to every block. Only the first block gets ``in_channels``.

        Raises:
            ValueError: a ``_per_block`` list of the wrong length, or both ``x`` and ``x_per_block`` given.
        """
        blocks = []
        for i in range(num_blocks):
            curr_kwargs = {}
            for k, v in kwargs.items():
                if k.endswith("_per_block"):
                    if len(v) != num_blocks:
                        raise ValueError(f"Argument '{k}' of make_stage should have {num_blocks} values, got {len(v)}")
                    newk = k[: -len("_per_block")]
                    if newk in kwargs:
                        raise ValueError(f"Cannot call make_stage with both {k} and {newk}!")
                    curr_kwargs[newk] = v[i]
                else:
                    curr_kwargs[k] = v
            blocks.append(block_class(in_channels=in_channels, out_channels=out_channels, **curr_kwargs))
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(depth: int, block_class: Optional[Type[CNNBlockBase]] = None,
                            **kwargs: Any) -> List[List[CNNBlockBase]]:
        """The four standard stages of a ResNet-``depth`` (torchvision widths; stride on the 3x3).

        Extra ``kwargs`` (e.g. ``norm``) go to every block. Raises ValueError for unknown depths.
        """
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
        num_blocks_per_stage = _BLOCKS_PER_STAGE[depth]
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        if depth < 50:
            in_channels = [64, 64, 128, 256]
            out_channels = [64, 128, 256, 512]
        else:
            in_channels = [64, 256, 512, 1024]
            out_channels = [256, 512, 1024, 2048]
        ret = []
        for n, s, i, o in zip(num_blocks_per_stage, [1, 2, 2, 2], in_channels, out_channels):
            if depth >= 50:
                kwargs["bottleneck_channels"] = o // 4
            ret.append(ResNet.make_stage(block_class=block_class, num_blocks=n,
                                         stride_per_block=[s] + [1] * (n - 1),
                                         in_channels=i, out_channels=o, **kwargs))
        return ret


ResNetBlockBase = CNNBlockBase


def make_stage(*args: Any, **kwargs: Any) -> List[CNNBlockBase]:
    """Alias of :meth:`ResNet.make_stage` (detectron2 keeps it for backward compatibility)."""
    return ResNet.make_stage(*args, **kwargs)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet from ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``.

    Keys: DEPTH (18/34/50/101/152), OUT_FEATURES, NUM_GROUPS, WIDTH_PER_GROUP, NORM, STRIDE_IN_1X1,
    RES5_DILATION (1 or 2), RES2_OUT_CHANNELS, STEM_OUT_CHANNELS, DEFORM_ON_PER_STAGE,
    DEFORM_MODULATED, DEFORM_NUM_GROUPS. Only stages up to the deepest OUT_FEATURE are built.

    Raises:
        ValueError: invalid combinations, naming the offending config key.

    Source: ``detectron2/modeling/backbone/resnet.py`` ``build_resnet_backbone``.
    """
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm)

    depth = r.DEPTH
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    out_features = list(r.OUT_FEATURES)
    for f in out_features:
        if f != "stem" and f not in _STAGE_INDEX:
            raise ValueError(f"MODEL.RESNETS.OUT_FEATURES has unknown feature {f!r}; use stem/res2..res5")
    num_groups = r.NUM_GROUPS
    bottleneck_channels = num_groups * r.WIDTH_PER_GROUP
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    res5_dilation = r.RES5_DILATION
    deform_on_per_stage = list(r.DEFORM_ON_PER_STAGE)
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")
    if len(deform_on_per_stage) != 4:
        raise ValueError(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE needs 4 values, got {deform_on_per_stage}")
    if depth in (18, 34):
        if out_channels != 64:
            raise ValueError("Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34")
        if any(deform_on_per_stage):
            raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE unsupported for R18/R34")
        if res5_dilation != 1:
            raise ValueError("Must set MODEL.RESNETS.RES5_DILATION = 1 for R18/R34")
        if num_groups != 1:
            raise ValueError("Must set MODEL.RESNETS.NUM_GROUPS = 1 for R18/R34")

    num_stages = max(_STAGE_INDEX.get(f, 0) for f in out_features) if out_features else 4
    stages = []
    for idx, stage_idx in enumerate(range(2, 2 + num_stages)):
        dilation = res5_dilation if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        n = _BLOCKS_PER_STAGE[depth][idx]
        stage_kargs: Dict[str, Any] = {
            "num_blocks": n,
            "stride_per_block": [first_stride] + [1] * (n - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if depth in (18, 34):
            stage_kargs["block_class"] = BasicBlock
        else:
            stage_kargs.update(bottleneck_channels=bottleneck_channels, stride_in_1x1=r.STRIDE_IN_1X1,
                               dilation=dilation, num_groups=num_groups)
            if deform_on_per_stage[idx]:
                stage_kargs.update(block_class=DeformBottleneckBlock, deform_modulated=r.DEFORM_MODULATED,
                                   deform_num_groups=r.DEFORM_NUM_GROUPS)
            else:
                stage_kargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**stage_kargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
