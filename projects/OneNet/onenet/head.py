"""OneNet prediction heads (paper Sec. 4 "Head", Sec. 4.1 "Multi-head Training"; authors'
``projects/OneNet/onenet/head.py``: ``Head``, ``FCOSHead``, ``RetinaHead``, ``Scale``).

Every head maps backbone features to a list of *stages*; each stage is a dict::

    {"pred_logits": (B, N, K) logits, "pred_boxes": (B, N, 4) XYXY_ABS boxes in input pixels}

where N is the number of locations of an image (``H/4 * W/4`` grid points for the CenterNet-style
head, ``sum_l H_l W_l`` for FCOS, ``sum_l H_l W_l A`` for RetinaNet; location-major, flattened
row by row). Only the multi-head CenterNet head returns more than one stage, and only in training.
Module names follow the authors' code so that their checkpoints load.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.layers import ShapeSpec
from common.modeling import build_anchor_generator
from common.modeling.box_regression import Box2BoxTransform, Box2BoxTransformLinear

from .deconv import CenternetDeconv

__all__ = ["Scale", "Head", "FCOSHead", "RetinaHead", "compute_locations", "ltrb_to_boxes", "apply_box_deltas"]

Stage = Dict[str, torch.Tensor]

# The authors decode the CenterNet/FCOS heads as (x - l, y - t, x + r, y + b) around grid points and
# the RetinaNet head with detectron2's Box2BoxTransform, weights (1, 1, 1, 1), clamp log(1000 / 16).
_LTRB = Box2BoxTransformLinear(normalize_by_size=False)
_DELTAS = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))


def _prior_bias(prior_prob: float) -> float:
    """Bias whose sigmoid is ``prior_prob`` (Lin et al. 2017, Sec. 4.1 "Initialization")."""
    return -math.log((1 - prior_prob) / prior_prob)


def compute_locations(h: int, w: int, stride: int, device: torch.device) -> torch.Tensor:
    """Image coordinates of the grid points of an ``h x w`` map with the given stride.

    Point ``(i, j)`` (row, column) sits at ``x = stride * j + stride // 2``,
    ``y = stride * i + stride // 2`` (stride 4: ``x = 4j + 2``, ``y = 4i + 2``).

    Returns:
        ``(h * w, 2)`` float32 ``(x, y)`` in input pixels, row-major (index ``i * w + j``).
    """
    xs = torch.arange(w, dtype=torch.float32, device=device) * stride + stride // 2
    ys = torch.arange(h, dtype=torch.float32, device=device) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1)


def ltrb_to_boxes(ltrb: torch.Tensor, stride: int) -> torch.Tensor:
    """Decode per-location distances to the four box sides into boxes.

    Args:
        ltrb: ``(B, 4, H, W)`` non-negative distances (left, top, right, bottom) in input pixels.
        stride: stride of the map in input pixels.

    Returns:
        ``(B, H * W, 4)`` float32 XYXY_ABS boxes ``(x - l, y - t, x + r, y + b)`` with the grid
        point ``(x, y)`` of :func:`compute_locations`, decoded by
        :class:`common.modeling.Box2BoxTransformLinear` (``normalize_by_size=False``) in float32 whatever
        the dtype of ``ltrb`` (under bfloat16 autocast the grid points 786, 790, 794 would
        otherwise round to 784, 792, 792).
    """
    b, _, h, w = ltrb.shape
    loc = _LTRB.points_to_boxes(compute_locations(h, w, stride, ltrb.device))  # (HW, 4) float32
    return _LTRB.apply_deltas(ltrb.flatten(2).transpose(1, 2), loc)


def apply_box_deltas(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """R-CNN box deltas ``(dx, dy, dw, dh)`` with weights (1, 1, 1, 1) applied to anchors
    (detectron2's :class:`common.modeling.Box2BoxTransform`, dw/dh clamp ``log(1000 / 16)``), in float32.

    Args:
        deltas: ``(..., N, 4)``.
        anchors: ``(N, 4)`` XYXY_ABS.

    Returns:
        ``(..., N, 4)`` float32 XYXY_ABS.
    """
    return _DELTAS.apply_deltas(deltas, anchors)


class Scale(nn.Module):
    """Learnable scalar multiplier (FCOS per-level regression scale), key ``scale`` ``(1,)``."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Head(nn.Module):
    """CenterNet-style OneNet head on the stride-4 map of :class:`CenternetDeconv`.

    Stage 1 (the authors' head): ``F1 = ReLU(feat1(F0))``; ``cls_score(F1)`` gives K logits per
    grid point, ``ReLU(ltrb_pred(F1))`` the distances to the four box sides in input pixels (no
    exp, no stride factor), decoded by :func:`ltrb_to_boxes`.

    Multi-head training (paper Sec. 4.1, ``num_stages > 1``, never released by the authors):
    stage ``j >= 2`` computes ``F_j = ReLU(cascade_convs[j-2](cat(F0, F_{j-1})))`` (2C -> C) and
    predicts with the *same* ``cls_score`` / ``ltrb_pred`` convs (weight sharing). The paper's
    stage 1 broadcasts F0 to 2C channels before a 2C -> C conv; since ``conv([F0, F0])`` with
    kernel ``[Wa, Wb]`` equals ``conv(F0)`` with kernel ``Wa + Wb``, stage 1 is parametrised as
    the C -> C ``feat1``, which keeps its keys and cost identical to the single-head model.
    In eval mode only stage 1 runs (single-head inference).

    Init (as the authors): xavier-uniform on every >= 2-D parameter of the head *including the
    neck* (this overrides the neck's own zero offset init), ``cls_score.bias`` = prior bias.
    """

    def __init__(
        self,
        deconv: CenternetDeconv,
        num_classes: int,
        prior_prob: float = 0.01,
        num_stages: int = 1,
        stride: int = 4,
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"MODEL.OneNet.NUM_HEADS_TRAIN must be >= 1, got {num_stages}")
        c = deconv.out_channels
        self.deconv = deconv
        self.feat1 = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.cls_score = nn.Conv2d(c, num_classes, kernel_size=3, padding=1)
        self.ltrb_pred = nn.Conv2d(c, 4, kernel_size=3, padding=1)
        self.cascade_convs = nn.ModuleList(
            nn.Conv2d(2 * c, c, kernel_size=3, padding=1) for _ in range(num_stages - 1)
        )
        self.num_stages = num_stages
        self.stride = stride
        self.prior_prob = prior_prob
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.cls_score.bias, _prior_bias(self.prior_prob))

    def _predict(self, feat: torch.Tensor) -> Stage:
        logits = self.cls_score(feat)  # (B, K, H, W)
        ltrb = F.relu(self.ltrb_pred(feat))  # (B, 4, H, W)
        return {"pred_logits": logits.flatten(2).transpose(1, 2), "pred_boxes": ltrb_to_boxes(ltrb, self.stride)}

    def forward(self, features: List[torch.Tensor]) -> List[Stage]:
        """``features`` = ``[res2, res3, res4, res5]`` -> stages (1 in eval, ``num_stages`` in training)."""
        f0 = self.deconv(features)
        feat = F.relu(self.feat1(f0))
        stages = [self._predict(feat)]
        if self.training:
            for conv in self.cascade_convs:
                feat = F.relu(conv(torch.cat((f0, feat), dim=1)))
                stages.append(self._predict(feat))
        return stages

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "Head":
        """Build from ``MODEL.OneNet.*`` and the backbone's res2..res5 shapes.

        Raises:
            ValueError: ``MODEL.OneNet.IN_FEATURES`` is not 4 maps of strides 4..32, or
                ``DECONV_CHANNEL[0]`` differs from the channels of the last one.
        """
        on = cfg.MODEL.OneNet
        names = list(on.IN_FEATURES)
        missing = [f for f in names if f not in input_shape]
        if missing or len(names) != 4:
            raise ValueError(
                f"MODEL.OneNet.IN_FEATURES must name the 4 backbone maps res2..res5 (HEAD CenterNet); got {names}, "
                f"backbone outputs {sorted(input_shape)} (set MODEL.RESNETS.OUT_FEATURES)"
            )
        shapes = [input_shape[f] for f in names]
        if [s.stride for s in shapes] != [4, 8, 16, 32]:
            raise ValueError(f"MODEL.OneNet.IN_FEATURES {names} must have strides 4, 8, 16, 32")
        if on.DECONV_CHANNEL[0] != shapes[3].channels:
            raise ValueError(
                f"MODEL.OneNet.DECONV_CHANNEL[0] = {on.DECONV_CHANNEL[0]} must equal the channels of {names[3]} "
                f"({shapes[3].channels}); e.g. (512, 256, 128, 64) for ResNet-18"
            )
        deconv = CenternetDeconv(
            channels=on.DECONV_CHANNEL,
            kernels=on.DECONV_KERNEL,
            lateral_channels=[shapes[2].channels, shapes[1].channels, shapes[0].channels],
            dcn=on.DCN,
            modulate=on.MODULATE_DEFORM,
        )
        return cls(deconv, on.NUM_CLASSES, on.PRIOR_PROB, on.NUM_HEADS_TRAIN, stride=4)


def _tower(in_channels: int, channels: int, num_conv: int, norm: str | None) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(num_conv):
        layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False))
        if norm is not None:
            layers.append(nn.GroupNorm(32, channels) if norm == "GN" else nn.BatchNorm2d(channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _init_dense_head(module: nn.Module, cls_score: nn.Conv2d, prior_prob: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.constant_(cls_score.bias, _prior_bias(prior_prob))


class FCOSHead(nn.Module):
    """OneNet on FPN levels with an FCOS-style head (authors' ``FCOSHead``; ``onenet.fcos.res50``).

    Shared over levels: ``cls_conv_module`` / ``reg_conv_module`` = ``num_conv`` x [3x3 conv (no
    bias) -> GroupNorm(32) (BatchNorm2d if ``norm != "GN"``) -> ReLU], then ``cls_score`` (K) and
    ``ltrb_pred`` (4). Level ``l``: ``ltrb = ReLU(scales[l] * raw) * stride_l`` decoded at
    ``x = stride_l * j + stride_l // 2``. Locations of all levels are concatenated (level-major).
    Init: normal(0, 0.01) convs, zero biases, prior bias on ``cls_score``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int],
        num_conv: int = 4,
        conv_channels: int = 256,
        norm: str = "GN",
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.cls_conv_module = _tower(in_channels, conv_channels, num_conv, norm)
        self.reg_conv_module = _tower(in_channels, conv_channels, num_conv, norm)
        self.cls_score = nn.Conv2d(conv_channels, num_classes, 3, padding=1)
        self.ltrb_pred = nn.Conv2d(conv_channels, 4, 3, padding=1)
        _init_dense_head(self, self.cls_score, prior_prob)

    def forward(self, features: List[torch.Tensor]) -> List[Stage]:
        """``features``: one ``(B, C, H_l, W_l)`` map per stride -> one stage over all levels."""
        if len(features) != len(self.strides):
            raise ValueError(f"FCOSHead: {len(features)} feature maps for MODEL.OneNet.FEATURES_STRIDE {self.strides}")
        logits, boxes = [], []
        for x, stride, scale in zip(features, self.strides, self.scales):
            logits.append(self.cls_score(self.cls_conv_module(x)).flatten(2).transpose(1, 2))
            ltrb = F.relu(scale(self.ltrb_pred(self.reg_conv_module(x)))) * stride
            boxes.append(ltrb_to_boxes(ltrb, stride))
        return [{"pred_logits": torch.cat(logits, 1), "pred_boxes": torch.cat(boxes, 1)}]


class RetinaHead(nn.Module):
    """OneNet on FPN levels with a RetinaNet-style head (authors' ``RetinaHead``; ``onenet.retinanet.res50``).

    ``cls_conv_module`` / ``reg_conv_module`` = ``num_conv`` x [3x3 conv (no bias, no norm) ->
    ReLU]; ``cls_score`` -> ``A * K``, ``bbox_pred`` -> ``A * 4`` deltas decoded on the anchors of
    ``anchor_generator`` (:class:`common.modeling.DefaultAnchorGenerator`, non-persistent) with
    weights (1, 1, 1, 1). Prediction index = ``location * A + anchor`` per level, levels
    concatenated. Init: normal(0, 0.01) convs, zero biases, prior bias on ``cls_score``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        anchor_generator: nn.Module,
        num_conv: int = 4,
        conv_channels: int = 256,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        num_anchors = set(anchor_generator.num_cell_anchors)
        if len(num_anchors) != 1:
            raise ValueError(f"RetinaHead: every level needs the same number of anchors, got {num_anchors}")
        self.num_anchors = num_anchors.pop()
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.cls_conv_module = _tower(in_channels, conv_channels, num_conv, None)
        self.reg_conv_module = _tower(in_channels, conv_channels, num_conv, None)
        self.cls_score = nn.Conv2d(conv_channels, self.num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(conv_channels, self.num_anchors * 4, 3, padding=1)
        _init_dense_head(self, self.cls_score, prior_prob)

    def forward(self, features: List[torch.Tensor]) -> List[Stage]:
        """``features``: one ``(B, C, H_l, W_l)`` map per level -> one stage over all anchors."""
        anchors = self.anchor_generator(features)
        a, k = self.num_anchors, self.num_classes
        logits, boxes = [], []
        for x, anc in zip(features, anchors):
            b, _, h, w = x.shape
            cls = self.cls_score(self.cls_conv_module(x)).view(b, a, k, h, w).permute(0, 3, 4, 1, 2)
            logits.append(cls.reshape(b, h * w * a, k))
            delta = self.bbox_pred(self.reg_conv_module(x)).view(b, a, 4, h, w).permute(0, 3, 4, 1, 2)
            boxes.append(apply_box_deltas(delta.reshape(b, h * w * a, 4), anc.tensor))
        return [{"pred_logits": torch.cat(logits, 1), "pred_boxes": torch.cat(boxes, 1)}]


def build_onenet_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The head selected by ``MODEL.OneNet.HEAD`` ("CenterNet", "FCOS", "RetinaNet").

    Raises:
        ValueError: unknown head, missing ``MODEL.OneNet.IN_FEATURES`` in the backbone, mismatching
            ``FEATURES_STRIDE``, or ``NUM_HEADS_TRAIN > 1`` with an FPN head.
    """
    on = cfg.MODEL.OneNet
    if on.HEAD == "CenterNet":
        return Head.from_config(cfg, input_shape)
    if on.HEAD not in ("FCOS", "RetinaNet"):
        raise ValueError(f"MODEL.OneNet.HEAD must be CenterNet, FCOS or RetinaNet, got {on.HEAD!r}")
    if on.NUM_HEADS_TRAIN != 1:
        raise ValueError("MODEL.OneNet.NUM_HEADS_TRAIN > 1 (multi-head training) is only implemented for HEAD CenterNet")
    names = list(on.IN_FEATURES)
    missing = [f for f in names if f not in input_shape]
    if missing:
        raise ValueError(
            f"MODEL.OneNet.IN_FEATURES {names}: {missing} not produced by the backbone ({sorted(input_shape)})"
        )
    shapes = [input_shape[f] for f in names]
    strides = [s.stride for s in shapes]
    if on.HEAD == "FCOS" and list(on.FEATURES_STRIDE) != strides:
        raise ValueError(f"MODEL.OneNet.FEATURES_STRIDE {list(on.FEATURES_STRIDE)} != strides {strides} of {names}")
    channels = {s.channels for s in shapes}
    if len(channels) != 1:
        raise ValueError(f"MODEL.OneNet.IN_FEATURES {names} must have equal channels, got {sorted(channels)}")
    in_channels = channels.pop()
    if on.HEAD == "FCOS":
        return FCOSHead(in_channels, on.NUM_CLASSES, strides, on.NUM_CONV, on.CONV_CHANNELS, on.CONV_NORM,
                        on.PRIOR_PROB)
    return RetinaHead(in_channels, on.NUM_CLASSES, build_anchor_generator(cfg, shapes), on.NUM_CONV,
                      on.CONV_CHANNELS, on.PRIOR_PROB)
