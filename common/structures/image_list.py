"""Batch of differently sized images padded into one tensor (detectron2 ``ImageList``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ImageList"]


class ImageList:
    """Images of varying sizes stored as one padded tensor plus their original sizes.

    Attributes:
        tensor: ``(N, C, H_pad, W_pad)`` (or ``(N, H_pad, W_pad)``), padding at bottom/right.
        image_sizes: list of N ``(h, w)`` int tuples, the unpadded sizes.

    Source: ``detectron2/structures/image_list.py``.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: List[Tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """The unpadded image ``idx``: ``(C, h, w)``."""
        size = self.image_sizes[idx]
        return self.tensor[idx, ..., : size[0], : size[1]]

    def to(self, *args: Any, **kwargs: Any) -> "ImageList":
        """Same image list with ``tensor.to(*args, **kwargs)``."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: Optional[Dict[str, int]] = None,
    ) -> "ImageList":
        """Pad images to a common size and stack them.

        Args:
            tensors: list of ``(C, h_i, w_i)`` (or ``(h_i, w_i)``) tensors sharing all leading dims.
            size_divisibility: if > 1, the padded H and W are rounded up to a multiple of it
                (e.g. 32 for an FPN whose coarsest level has stride 32).
            pad_value: value written into the padding.
            padding_constraints: optional ``Backbone.padding_constraints`` dict; its
                ``"size_divisibility"`` overrides the argument and ``"square_size"`` > 0 pads to a
                square of at least that side.

        Returns:
            ImageList with ``tensor`` of shape ``(N, C, H_pad, W_pad)``; H_pad/W_pad = max h/w rounded up.

        Raises:
            ValueError: empty list, non-tensor elements or mismatching leading dimensions.
        """
        if not isinstance(tensors, (tuple, list)) or len(tensors) == 0:
            raise ValueError("ImageList.from_tensors expects a non-empty list/tuple of tensors")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"ImageList.from_tensors: element {i} is a {type(t)}, not a Tensor")
            if t.shape[:-2] != tensors[0].shape[:-2]:
                raise ValueError(
                    f"ImageList.from_tensors: image {i} has shape {tuple(t.shape)}, leading dims "
                    f"differ from image 0 {tuple(tensors[0].shape)}"
                )
        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in tensors]
        max_h = max(s[0] for s in image_sizes)
        max_w = max(s[1] for s in image_sizes)

        if padding_constraints is not None:
            square_size = padding_constraints.get("square_size", 0)
            if square_size > 0:
                max_h = max_w = max(square_size, max_h, max_w)
            size_divisibility = padding_constraints.get("size_divisibility", size_divisibility)
        if size_divisibility > 1:
            stride = size_divisibility
            max_h = (max_h + stride - 1) // stride * stride
            max_w = (max_w + stride - 1) // stride * stride

        if len(tensors) == 1:
            h, w = image_sizes[0]
            batched = F.pad(tensors[0], [0, max_w - w, 0, max_h - h], value=pad_value).unsqueeze_(0)
        else:
            batch_shape = [len(tensors)] + list(tensors[0].shape[:-2]) + [max_h, max_w]
            batched = tensors[0].new_full(batch_shape, pad_value)
            for img, pad_img in zip(tensors, batched):
                pad_img[..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched.contiguous(), image_sizes)
