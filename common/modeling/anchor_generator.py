"""Anchor generator (detectron2 ``modeling/anchor_generator.py`` ``DefaultAnchorGenerator``).

Used by OneNet's RetinaNet head. Cell anchors are **non-persistent** buffers (as in detectron2 >=
v0.4), so they are not in the state dict; checkpoints of older detectron2 that saved
``anchor_generator.cell_anchors.{i}`` still load (``DetectionCheckpointer`` ignores those keys).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
from fvcore.common.registry import Registry
from torch import nn

from common.layers import ShapeSpec
from common.structures import Boxes

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "DefaultAnchorGenerator", "build_anchor_generator"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Registry for anchor generators: called as ``obj(cfg, input_shape: List[ShapeSpec])`` and returning
an ``nn.Module`` whose ``forward(features: List[Tensor]) -> List[Boxes]`` gives one Boxes per level.
"""


def _broadcast_params(params: Sequence, num_features: int, name: str) -> List[List[float]]:
    """``[[a, b]]`` -> the same list for every level; ``[[a], [b], ...]`` must have one per level."""
    params = [list(p) if isinstance(p, (list, tuple)) else p for p in params]
    if not isinstance(params[0], list):
        raise ValueError(f"MODEL.ANCHOR_GENERATOR.{name} must be a list of lists, got {params}")
    if len(params) == 1:
        return [list(map(float, params[0]))] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.{name} has {len(params)} entries but there are {num_features} feature levels"
        )
    return [list(map(float, p)) for p in params]


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """Anchors centred at (0, 0): ``(len(sizes) * len(aspect_ratios), 4)`` XYXY, sizes outer, ratios inner.

    For size ``s`` (sqrt of the area, pixels) and ratio ``a = h / w``: ``w = sqrt(s^2 / a)``,
    ``h = a * w``, anchor ``(-w/2, -h/2, w/2, h/2)`` (detectron2 ``generate_cell_anchors``).
    """
    anchors = []
    for size in sizes:
        area = size ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


class DefaultAnchorGenerator(nn.Module):
    """Anchors on a regular grid per feature level (detectron2 ``DefaultAnchorGenerator``).

    Args:
        sizes: per level a list of anchor sizes (sqrt of area, input pixels), or one list for all.
        aspect_ratios: per level a list of ratios ``h / w``, or one list for all.
        strides: stride of each level (input pixels).
        offset: anchor centre offset in units of the stride (0.0: centre at the top-left corner of
            the cell, as detectron2's default; 0.5: cell centre).

    ``forward(features)`` returns one :class:`Boxes` ``(H_l * W_l * A_l, 4)`` XYXY_ABS per level,
    location-major (index = ``(y * W_l + x) * A_l + a``).

    Raises:
        ValueError: ``offset`` outside [0, 1) or per-level parameter counts that do not match.
    """

    box_dim: int = 4

    def __init__(
        self,
        *,
        sizes: Sequence[Union[Sequence[float], float]],
        aspect_ratios: Sequence[Union[Sequence[float], float]],
        strides: Sequence[int],
        offset: float = 0.5,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "SIZES")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "ASPECT_RATIOS")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        self.offset = float(offset)
        self._num_levels = len(sizes)
        for i, (s, a) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"_cell_anchors_{i}", generate_cell_anchors(s, a), persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> "DefaultAnchorGenerator":
        """Build from ``MODEL.ANCHOR_GENERATOR.{SIZES, ASPECT_RATIOS, OFFSET}`` and the level strides."""
        ag = cfg.MODEL.ANCHOR_GENERATOR
        return cls(sizes=ag.SIZES, aspect_ratios=ag.ASPECT_RATIOS, strides=[s.stride for s in input_shape],
                   offset=ag.OFFSET)

    @property
    def cell_anchors(self) -> List[torch.Tensor]:
        """Per level ``(A_l, 4)`` anchors centred at the origin."""
        return [getattr(self, f"_cell_anchors_{i}") for i in range(self._num_levels)]

    @property
    def num_cell_anchors(self) -> List[int]:
        """Anchors per location of each level (``A_l``)."""
        return [len(c) for c in self.cell_anchors]

    num_anchors = num_cell_anchors

    def _grid_anchors(self, grid_sizes: List[List[int]]) -> List[torch.Tensor]:
        anchors = []
        for (h, w), stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            shift_x = torch.arange(w, dtype=torch.float32, device=base.device) * stride + self.offset * stride
            shift_y = torch.arange(h, dtype=torch.float32, device=base.device) * stride + self.offset * stride
            sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)  # (HW, 4)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """
        Args:
            features: per level ``(N, C, H_l, W_l)`` (only the spatial sizes are used).

        Returns:
            per level :class:`Boxes` of ``H_l * W_l * A_l`` XYXY_ABS anchors (same for every image).

        Raises:
            ValueError: the number of levels differs from ``strides``.
        """
        if len(features) != self.num_features:
            raise ValueError(f"DefaultAnchorGenerator: {len(features)} feature maps for {self.num_features} strides")
        grid_sizes = [list(f.shape[-2:]) for f in features]
        return [Boxes(a) for a in self._grid_anchors(grid_sizes)]


ANCHOR_GENERATOR_REGISTRY.register(DefaultAnchorGenerator)


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """``MODEL.ANCHOR_GENERATOR.NAME`` from :data:`ANCHOR_GENERATOR_REGISTRY`, built from ``cfg``.

    Raises:
        KeyError: unknown ``MODEL.ANCHOR_GENERATOR.NAME``.
    """
    anchor_cls = ANCHOR_GENERATOR_REGISTRY.get(cfg.MODEL.ANCHOR_GENERATOR.NAME)
    if hasattr(anchor_cls, "from_config"):
        return anchor_cls.from_config(cfg, input_shape)
    return anchor_cls(cfg, input_shape)
