"""Input normalisation shared by the meta-architectures (detectron2 keeps it inline in each)."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from common.structures import ImageList

__all__ = ["normalize_and_pad", "register_pixel_stats"]


def register_pixel_stats(module: nn.Module, cfg) -> None:
    """Give ``module`` the buffers ``pixel_mean`` and ``pixel_std``, ``(C, 1, 1)`` float, from
    ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD`` (in ``INPUT.FORMAT`` channel order, 0-255 units).

    They are non-persistent: the authors' Sparse R-CNN / OneNet / CenterNet normalise with
    constants, so their checkpoints have no such keys; the buffers still follow ``module.to()``.

    Raises:
        ValueError: the two config lists differ in length, or a std is zero.
    """
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    if len(mean) != len(std):
        raise ValueError(f"MODEL.PIXEL_MEAN {mean} and MODEL.PIXEL_STD {std} differ in length")
    if any(s == 0 for s in std):
        raise ValueError(f"MODEL.PIXEL_STD {std} has a zero entry")
    module.register_buffer("pixel_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
    module.register_buffer("pixel_std", torch.tensor(std).view(-1, 1, 1), persistent=False)


def normalize_and_pad(module: nn.Module, batched_inputs: List[dict], size_divisibility: int) -> ImageList:
    """``(image - pixel_mean) / pixel_std`` of each input's ``"image"`` (``(C, H, W)``, 0-255, on
    ``module.pixel_mean``'s device), padded bottom/right with 0 to a common size that is a multiple
    of ``size_divisibility`` (detectron2's ``preprocess_image``)."""
    images = [(x["image"].to(module.pixel_mean.device) - module.pixel_mean) / module.pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)
