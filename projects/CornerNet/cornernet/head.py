"""Corner (and centre) pooling + prediction heads of one hourglass stack.

Names and structure follow the authors' modules so that their checkpoints load by a prefix
rename (princeton-vl/CornerNet ``models/CornerNet.py``, ``models/py_utils/kp.py``; CornerNet-Lite
``core/models/CornerNet{,_Squeeze}.py``; Duankaiwen/CenterNet ``models/CenterNet-104.py``).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from common.modeling.backbone.hourglass import ConvBNReLU
from common.ops import CascadeCornerPool, CenterPool, CornerPool

__all__ = ["prediction_layer", "CornerHeads"]


def prediction_layer(in_channels: int, head_conv: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """``0``: ``kernel x kernel`` conv with bias + ReLU (the authors' ``convolution(k, ..., with_bn=False)``),
    ``1``: 1x1 conv to ``out_channels``. Keys ``0.conv.{weight,bias}``, ``1.{weight,bias}``."""
    return nn.Sequential(ConvBNReLU(kernel, in_channels, head_conv, with_bn=False), nn.Conv2d(head_conv, out_channels, 1))


class CornerHeads(nn.Module):
    """Pooling modules and heads of every supervised stack.

    Per stack ``s``: ``tl_pools[s]``/``br_pools[s]`` (:class:`~common.ops.CornerPool`, or
    :class:`~common.ops.CascadeCornerPool` with ``cascade``), and the heads ``tl_heats``/
    ``br_heats`` (C classes, final bias ``prior_bias``), ``tl_tags``/``br_tags`` (1-d embedding),
    ``tl_offs``/``br_offs`` (2). With ``center`` (CenterNet-Triplets) also ``ct_pools``
    (:class:`~common.ops.CenterPool`), ``ct_heats`` and ``ct_offs`` (no centre tag). Tag and
    offset heads keep PyTorch's default init, as the authors.

    ``forward(x (N, channels, H, W), stack)`` -> ``{"tl_heat": (N, C, H, W), "br_heat", "tl_tag":
    (N, 1, H, W), "br_tag", "tl_off": (N, 2, H, W), "br_off"[, "ct_heat", "ct_off"]}`` (logits).
    """

    def __init__(self, num_stacks: int, channels: int, num_classes: int, pool_channels: int = 128,
                 head_conv: int = 256, kernel: int = 3, prior_bias: float = -2.19, cascade: bool = False,
                 center: bool = False, norm: str = "BN"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"MODEL.CORNERNET.NUM_CLASSES must be >= 1, got {num_classes}")
        if kernel not in (1, 3):
            raise ValueError(f"MODEL.CORNERNET.HEAD_KERNEL must be 1 or 3, got {kernel}")
        pool = CascadeCornerPool if cascade else CornerPool
        self.center = bool(center)
        self.tl_pools = nn.ModuleList([pool(channels, ("top", "left"), pool_channels, norm) for _ in range(num_stacks)])
        self.br_pools = nn.ModuleList([pool(channels, ("bottom", "right"), pool_channels, norm)
                                       for _ in range(num_stacks)])
        if center:
            self.ct_pools = nn.ModuleList([CenterPool(channels, pool_channels, norm) for _ in range(num_stacks)])
        kinds = ["tl", "br"] + (["ct"] if center else [])
        for kind in kinds:
            setattr(self, f"{kind}_heats", nn.ModuleList(
                [prediction_layer(channels, head_conv, num_classes, kernel) for _ in range(num_stacks)]))
            if kind != "ct":
                setattr(self, f"{kind}_tags", nn.ModuleList(
                    [prediction_layer(channels, head_conv, 1, kernel) for _ in range(num_stacks)]))
            setattr(self, f"{kind}_offs", nn.ModuleList(
                [prediction_layer(channels, head_conv, 2, kernel) for _ in range(num_stacks)]))
            for layer in getattr(self, f"{kind}_heats"):
                nn.init.constant_(layer[-1].bias, prior_bias)
        self.kinds = kinds

    def forward(self, x: torch.Tensor, stack: int) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for kind in self.kinds:
            feat = getattr(self, f"{kind}_pools")[stack](x)
            out[f"{kind}_heat"] = getattr(self, f"{kind}_heats")[stack](feat)
            if kind != "ct":
                out[f"{kind}_tag"] = getattr(self, f"{kind}_tags")[stack](feat)
            out[f"{kind}_off"] = getattr(self, f"{kind}_offs")[stack](feat)
        return out
