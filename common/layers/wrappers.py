"""Small wrappers around torch ops (detectron2 ``layers/wrappers.py``)."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Conv2d", "ConvTranspose2d", "BatchNorm2d", "Linear", "interpolate", "cat", "nonzero_tuple"]

# Plain aliases, kept for code written against detectron2's names.
ConvTranspose2d = torch.nn.ConvTranspose2d
BatchNorm2d = torch.nn.BatchNorm2d
Linear = torch.nn.Linear
interpolate = F.interpolate


def cat(tensors: List[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that skips the copy for a single tensor.

    Raises:
        TypeError: when ``tensors`` is not a list/tuple.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat expects a list/tuple of tensors, got {type(tensors)}")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def nonzero_tuple(x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)`` that also works for 0-dim tensors (one index tensor per dim)."""
    if x.dim() == 0:
        return x.unsqueeze(0).nonzero().unbind(1)
    return x.nonzero().unbind(1)


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` with an optional normalisation submodule and activation.

    Extra keyword arguments:
        norm (nn.Module | None): applied after the convolution; stored as submodule ``norm`` so the
            state-dict keys are ``<name>.weight``, ``<name>.norm.weight``, ... as in detectron2.
        activation (callable | None): applied after ``norm``.

    Source: ``detectron2/layers/wrappers.py`` ``Conv2d``.
    """

    def __init__(self, *args, norm: Optional[torch.nn.Module] = None,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``.

        Raises:
            ValueError: empty input in training mode with a SyncBatchNorm norm (undefined statistics).
        """
        if x.numel() == 0 and self.training and isinstance(self.norm, torch.nn.SyncBatchNorm):
            raise ValueError("SyncBatchNorm does not support empty inputs!")
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
