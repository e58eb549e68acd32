"""Input normalisation shared by the meta-architectures (detectron2 keeps it inline in each)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["register_pixel_stats"]


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
