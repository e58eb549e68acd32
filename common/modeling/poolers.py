"""Multi-level RoI feature pooling for FPN (detectron2 ``modeling/poolers.py``)."""
from __future__ import annotations

import math
from typing import List, Tuple, Union

import torch
from torch import nn
from torchvision.ops import RoIPool

from common.layers import ROIAlign, nonzero_tuple
from common.structures import Boxes

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]


def assign_boxes_to_levels(box_lists: List[Boxes], min_level: int, max_level: int,
                           canonical_box_size: int, canonical_level: int) -> torch.Tensor:
    """FPN level of every box (FPN paper, Eq. 1), counted from ``min_level``.

    ``level = clamp(floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8)), min_level, max_level)``;
    a 224x224 box goes to ``canonical_level`` (4), each halving of the side goes one level finer.

    Args:
        box_lists: per image, boxes in XYXY_ABS pixels.

    Returns:
        ``(M,)`` int64 in ``[0, max_level - min_level]`` for the M boxes of all images, image-major.
    """
    box_sizes = torch.sqrt(torch.cat([boxes.area() for boxes in box_lists]))
    level_assignments = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    level_assignments = torch.clamp(level_assignments, min=min_level, max=max_level)
    return level_assignments.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: List[Boxes]) -> torch.Tensor:
    """Stack per-image boxes into the ``(M, 5)`` RoI format ``(batch_index, x1, y1, x2, y2)``."""
    boxes = torch.cat([b.tensor for b in box_lists], dim=0)
    sizes = torch.tensor([len(b) for b in box_lists], device=boxes.device)
    indices = torch.repeat_interleave(torch.arange(len(box_lists), dtype=boxes.dtype, device=boxes.device), sizes)
    return torch.cat([indices[:, None], boxes], dim=1)


class ROIPooler(nn.Module):
    """Pool a fixed-size feature for every box from the FPN level matching its size.

    Args:
        output_size: ``R`` or ``(R, R)`` output bins.
        scales: ``1 / stride`` of each input level, fine to coarse (e.g. ``(1/4, 1/8, 1/16, 1/32)``);
            must be powers of 2.
        sampling_ratio: samples per bin for ROIAlign (0 = adaptive).
        pooler_type: ``"ROIAlign"`` (aligned=False), ``"ROIAlignV2"`` (aligned=True, half-pixel
            correct) or ``"ROIPool"``; the submodules are ``level_poolers.{i}``.
        canonical_box_size, canonical_level: a box of this side (224 px) maps to this level (4, i.e. p4).

    Raises:
        ValueError: unknown pooler type, or scales that are not contiguous powers of 2.

    Source: ``detectron2/modeling/poolers.py`` ``ROIPooler``; level rule: Lin et al., FPN, Eq. (1).
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]], scales: List[float], sampling_ratio: int,
                 pooler_type: str, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
            raise ValueError(f"ROIPooler output_size must be an int or a pair of ints, got {output_size}")
        self.output_size = tuple(output_size)

        if pooler_type in ("ROIAlign", "ROIAlignV2"):
            aligned = pooler_type == "ROIAlignV2"
            self.level_poolers = nn.ModuleList(
                ROIAlign(output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
                for scale in scales
            )
        elif pooler_type == "ROIPool":
            self.level_poolers = nn.ModuleList(RoIPool(output_size, spatial_scale=scale) for scale in scales)
        else:
            raise ValueError(f"Unknown pooler type: {pooler_type!r} (use ROIAlign, ROIAlignV2 or ROIPool)")

        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not (math.isclose(min_level, round(min_level)) and math.isclose(max_level, round(max_level))):
            raise ValueError(f"ROIPooler scales {list(scales)} must be powers of 2")
        self.min_level = int(round(min_level))
        self.max_level = int(round(max_level))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"ROIPooler scales {list(scales)} do not form a contiguous pyramid")
        if not 0 <= self.min_level <= self.max_level:
            raise ValueError(f"ROIPooler scales {list(scales)} must decrease and be <= 1")
        if canonical_box_size <= 0:
            raise ValueError("canonical_box_size must be positive")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """
        Args:
            x: one ``(N, C, H_l, W_l)`` feature map per level, in the order of ``scales``.
            box_lists: N :class:`Boxes` (one per image) in XYXY_ABS input-image pixels.

        Returns:
            ``(M, C, R, R)`` with M = total boxes, rows ordered image 0's boxes first, then image 1's, ...

        Raises:
            ValueError: wrong number of levels or images.
        """
        num_levels = len(self.level_poolers)
        if not isinstance(x, list) or not isinstance(box_lists, list):
            raise ValueError("ROIPooler expects a list of feature maps and a list of Boxes")
        if len(x) != num_levels:
            raise ValueError(f"ROIPooler got {len(x)} feature levels, expected {num_levels}")
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"ROIPooler got boxes for {len(box_lists)} images but features for {x[0].size(0)}")
        num_channels = x[0].shape[1]
        if len(box_lists) == 0:
            return x[0].new_zeros((0, num_channels) + self.output_size)

        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)
        if num_levels == 1:
            return self.level_poolers[0](x[0], pooler_fmt_boxes)

        level_assignments = assign_boxes_to_levels(box_lists, self.min_level, self.max_level,
                                                   self.canonical_box_size, self.canonical_level)
        output = x[0].new_zeros((pooler_fmt_boxes.size(0), num_channels) + self.output_size)
        # one batched RoIAlign call per level; results scattered back to image order
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
