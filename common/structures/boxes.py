"""Axis-aligned boxes: :class:`BoxMode`, :class:`Boxes` and pairwise overlap functions.

Mirrors ``detectron2/structures/boxes.py`` (v0.6): same enum values, same method names and the
same conventions (``Boxes.tensor`` is ``(N, 4)`` float32 in XYXY_ABS pixels; "empty" means a side
of length ``<= threshold``).
"""
from __future__ import annotations

import math
from enum import IntEnum, unique
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

_RawBoxType = Union[List[float], Tuple[float, ...], torch.Tensor, np.ndarray]

__all__ = ["BoxMode", "Boxes", "pairwise_intersection", "pairwise_iou", "pairwise_ioa"]


@unique
class BoxMode(IntEnum):
    """Box representation modes (values identical to detectron2, so they serialise the same way).

    * ``XYXY_ABS`` (0): ``(x0, y0, x1, y1)`` in absolute pixels.
    * ``XYWH_ABS`` (1): ``(x0, y0, w, h)`` in absolute pixels (COCO json format).
    * ``XYXY_REL`` (2) / ``XYWH_REL`` (3): same, relative to the image size (not convertible here,
      as in detectron2).
    * ``XYWHA_ABS`` (4): ``(xc, yc, w, h, a)`` rotated box, angle ``a`` in degrees counter-clockwise.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: _RawBoxType, from_mode: "BoxMode", to_mode: "BoxMode") -> _RawBoxType:
        """Convert ``box`` between modes, returning the same container type (and dtype).

        Args:
            box: a single box as a list/tuple of 4 (or 5 for XYWHA) numbers, or an ``(N, k)``
                ``np.ndarray`` / ``torch.Tensor`` with ``k`` = 4 or 5.
            from_mode, to_mode: :class:`BoxMode` members (or their int values).

        Returns:
            list/tuple, ndarray or tensor of the converted box(es); the input is never modified.

        Raises:
            ValueError: a list/tuple whose length is not 4 or 5.
            NotImplementedError: relative modes, or an unsupported pair of modes.

        Source: ``detectron2/structures/boxes.py`` ``BoxMode.convert``.
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        original_type = type(box)
        is_numpy = isinstance(box, np.ndarray)
        single_box = isinstance(box, (list, tuple))
        if single_box:
            if len(box) not in (4, 5):
                raise ValueError(
                    "BoxMode.convert takes either a k-tuple/list or an Nxk array/tensor, where k == 4 "
                    f"or 5; got a {original_type.__name__} of length {len(box)}"
                )
            arr = torch.tensor(box)[None, :]
        elif is_numpy:
            arr = torch.from_numpy(np.asarray(box)).clone()
        else:
            arr = box.clone()

        relative = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)
        if from_mode in relative or to_mode in relative:
            raise NotImplementedError("Relative box modes are not supported by BoxMode.convert")

        if from_mode == BoxMode.XYWHA_ABS and to_mode == BoxMode.XYXY_ABS:
            arr = _xywha_to_enclosing_xyxy(arr)
        elif from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYWHA_ABS:
            dtype = arr.dtype
            centers = arr[:, :2].double() + arr[:, 2:4].double() / 2
            angles = torch.zeros((arr.shape[0], 1), dtype=torch.float64, device=arr.device)
            arr = torch.cat([centers, arr[:, 2:4].double(), angles], dim=1).to(dtype)
        elif from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
            arr = box_convert(arr, "xywh", "xyxy")
        elif from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
            arr = box_convert(arr, "xyxy", "xywh")
        else:
            raise NotImplementedError(f"Conversion from BoxMode {from_mode} to {to_mode} is not supported yet")

        if single_box:
            return original_type(arr.flatten().tolist())
        if is_numpy:
            return arr.numpy()
        return arr


def _xywha_to_enclosing_xyxy(arr: torch.Tensor) -> torch.Tensor:
    """Axis-aligned box enclosing each rotated ``(xc, yc, w, h, angle_deg)`` row; keeps dtype."""
    dtype = arr.dtype
    arr = arr.double()
    w, h, a = arr[:, 2], arr[:, 3], arr[:, 4]
    c = torch.abs(torch.cos(a * math.pi / 180.0))
    s = torch.abs(torch.sin(a * math.pi / 180.0))
    new_w = c * w + s * h
    new_h = c * h + s * w
    x0 = arr[:, 0] - new_w / 2.0
    y0 = arr[:, 1] - new_h / 2.0
    return torch.stack([x0, y0, x0 + new_w, y0 + new_h], dim=1).to(dtype)


class Boxes:
    """A list of N axis-aligned boxes stored as one ``(N, 4)`` float32 tensor in XYXY_ABS pixels.

    Supports ``len``, iteration (over rows), indexing with int / slice / bool mask / index tensor
    (always returning :class:`Boxes`), ``.to(device)`` and :meth:`cat`.

    Source: ``detectron2/structures/boxes.py`` ``Boxes``.
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]):
        """
        Args:
            tensor: ``(N, 4)`` boxes ``(x1, y1, x2, y2)``; converted to float32 on the same device
                (CPU for non-tensors). An empty input of any shape becomes ``(0, 4)``.

        Raises:
            ValueError: when the tensor is not ``(N, 4)``.
        """
        device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
        tensor = torch.as_tensor(tensor, dtype=torch.float32, device=device)
        if tensor.numel() == 0:
            # reshape keeps a (0, 4) shape usable by every method even when built from []
            tensor = tensor.reshape((-1, 4)).to(dtype=torch.float32, device=device)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise ValueError(f"Boxes expects a (N, 4) tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> "Boxes":
        """Deep copy of the boxes."""
        return Boxes(self.tensor.clone())

    def to(self, device: Union[str, torch.device]) -> "Boxes":
        """Boxes on ``device`` (dtype stays float32)."""
        return Boxes(self.tensor.to(device=device))

    def area(self) -> torch.Tensor:
        """``(N,)`` areas ``(x2 - x1) * (y2 - y1)`` in pixels² (negative for inverted boxes)."""
        b = self.tensor
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def clip(self, box_size: Tuple[int, int]) -> None:
        """Clamp coordinates in place to ``[0, width]`` x ``[0, height]``.

        Args:
            box_size: ``(height, width)`` of the clipping region in pixels.

        Raises:
            ValueError: the tensor contains inf or NaN (clipping would hide a bug upstream).
        """
        if not torch.isfinite(self.tensor).all():
            raise ValueError("Box tensor contains infinite or NaN!")
        h, w = box_size
        x1 = self.tensor[:, 0].clamp(min=0, max=w)
        y1 = self.tensor[:, 1].clamp(min=0, max=h)
        x2 = self.tensor[:, 2].clamp(min=0, max=w)
        y2 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """``(N,)`` bool mask of boxes whose width and height are both ``> threshold`` pixels."""
        b = self.tensor
        return ((b[:, 2] - b[:, 0]) > threshold) & ((b[:, 3] - b[:, 1]) > threshold)

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """``(N,)`` bool mask of boxes lying inside ``(height, width)`` extended by ``boundary_threshold`` px."""
        h, w = box_size
        t = boundary_threshold
        b = self.tensor
        return (b[:, 0] >= -t) & (b[:, 1] >= -t) & (b[:, 2] < w + t) & (b[:, 3] < h + t)

    def get_centers(self) -> torch.Tensor:
        """``(N, 2)`` box centres ``(x, y)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiply x coordinates by ``scale_x`` and y coordinates by ``scale_y`` in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: List["Boxes"]) -> "Boxes":
        """Concatenate a list of :class:`Boxes` (an empty list gives an empty ``(0, 4)`` Boxes).

        Raises:
            TypeError: when the argument is not a list/tuple of :class:`Boxes`.
        """
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat expects a list of Boxes, got {type(boxes_list)}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        if not all(isinstance(b, Boxes) for b in boxes_list):
            raise TypeError("Boxes.cat expects every element to be a Boxes instance")
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __getitem__(self, item) -> "Boxes":
        """Index with an int (gives 1 box), slice, bool mask ``(N,)`` or index tensor.

        Raises:
            IndexError: when the result is not a ``(k, 4)`` matrix (e.g. indexing a column).
        """
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(f"Indexing on Boxes with {item} failed to return a matrix!")
        return Boxes(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return "Boxes(" + str(self.tensor) + ")"

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield each box as a ``(4,)`` tensor."""
        yield from self.tensor


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection areas (pixels²) of every pair, ``(N, M)``; boxes in XYXY_ABS.

    Source: ``detectron2/structures/boxes.py`` ``pairwise_intersection``.
    """
    a, b = boxes1.tensor, boxes2.tensor
    wh = torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])
    return wh.clamp(min=0).prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of every pair, ``(N, M)``; pairs without overlap (incl. two empty boxes) give 0, never NaN.

    Uses ``torchvision.ops.box_iou``; its 0/0 for degenerate pairs is mapped to 0 as detectron2 does.
    Source: ``detectron2/structures/boxes.py`` ``pairwise_iou``.
    """
    return torch.nan_to_num(box_iou(boxes1.tensor, boxes2.tensor), nan=0.0)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of ``boxes2`` for every pair, ``(N, M)``; 0 where there is no overlap.

    Source: ``detectron2/structures/boxes.py`` ``pairwise_ioa``.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    area2 = boxes2.area()
    return torch.where(inter > 0, inter / area2[None, :], torch.zeros(1, dtype=inter.dtype, device=inter.device))
