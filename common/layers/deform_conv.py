"""Deformable convolutions v1/v2 on ``torchvision.ops.deform_conv2d`` (CPU and GPU, no compile step).

Constructor arguments, parameter names (``weight``, ``bias``) and the offset/mask layout are those
of ``detectron2/layers/deform_conv.py``; torchvision uses the identical layout, so checkpoints and
offset-predicting convs trained with detectron2's CUDA kernels work unchanged:

* ``offset``: ``(N, 2 * deformable_groups * kh * kw, H_out, W_out)``; for deformable group g and
  kernel tap k (row-major over ``kh x kw``), channel ``2 * (g * kh * kw + k)`` is the y (row)
  offset and the next channel the x (column) offset, in input pixels.
* ``mask`` (modulated only): ``(N, deformable_groups * kh * kw, H_out, W_out)``, usually a sigmoid.

Initialisation (``weight_init``): ``"kaiming"`` = detectron2's ``kaiming_uniform_(nonlinearity="relu")``
(the default); ``"dcnv2"`` = ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
``fan_in = in_channels / groups * kh * kw``, as ``DCNv2.reset_parameters`` of the DCNv2 package
that xingyizhou/CenterNet ships (``src/lib/models/networks/DCNv2/dcn_v2.py``). Biases start at 0.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv"]

_IntPair = Union[int, Tuple[int, int]]
_WEIGHT_INITS = ("kaiming", "dcnv2")


class _DeformConvBase(nn.Module):
    """Shared constructor, shape checks and post-processing of both deformable conv versions."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntPair, stride: _IntPair,
                 padding: _IntPair, dilation: _IntPair, groups: int, deformable_groups: int, bias: bool,
                 norm: Optional[nn.Module], activation: Optional[Callable[[torch.Tensor], torch.Tensor]],
                 weight_init: str = "kaiming"):
        super().__init__()
        if weight_init not in _WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {_WEIGHT_INITS}, got {weight_init!r}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels {in_channels} is not divisible by groups {groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels {out_channels} is not divisible by groups {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self.norm = norm
        self.activation = activation
        self.weight_init = weight_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` as ``self.weight_init`` says (module docstring) and ``bias`` to 0."""
        if self.weight_init == "dcnv2":
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.weight, -bound, bound)
        else:
            nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _output_hw(self, h: int, w: int) -> Tuple[int, int]:
        out = []
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
            out.append((size + 2 * p - (d * (k - 1) + 1)) // s + 1)
        return out[0], out[1]

    def _check(self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        taps = self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        out_hw = self._output_hw(x.shape[2], x.shape[3])
        if tuple(offset.shape) != (x.shape[0], 2 * taps, *out_hw):
            raise ValueError(
                f"{type(self).__name__}: offset must have shape {(x.shape[0], 2 * taps, *out_hw)} "
                f"(N, 2*deformable_groups*kh*kw, H_out, W_out), got {tuple(offset.shape)}"
            )
        if mask is not None and tuple(mask.shape) != (x.shape[0], taps, *out_hw):
            raise ValueError(
                f"{type(self).__name__}: mask must have shape {(x.shape[0], taps, *out_hw)}, got {tuple(mask.shape)}"
            )

    def _run(self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        self._check(x, offset, mask)
        if x.numel() == 0:
            out = x.new_zeros((x.shape[0], self.out_channels, *self._output_hw(x.shape[2], x.shape[3])))
        elif x.dtype in (torch.float16, torch.bfloat16):
            # torchvision's CPU kernel has no half/bfloat16 version and its CUDA autocast wrapper
            # runs in float32: do the same on every device, output in the input's dtype.
            with torch.autocast(x.device.type, enabled=False):
                out = deform_conv2d(x.float(), offset.float(), self.weight.float(),
                                    None if self.bias is None else self.bias.float(), stride=self.stride,
                                    padding=self.padding, dilation=self.dilation,
                                    mask=None if mask is None else mask.float()).to(x.dtype)
        else:
            out = deform_conv2d(x, offset.to(x.dtype), self.weight, self.bias, stride=self.stride,
                                padding=self.padding, dilation=self.dilation,
                                mask=None if mask is None else mask.to(x.dtype))
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, "
                f"deformable_groups={self.deformable_groups}, bias={self.with_bias}")


class DeformConv(_DeformConvBase):
    """Deformable convolution v1 (Dai et al. 2017): ``forward(x, offset)``.

    Args (as detectron2): in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
        groups=1, deformable_groups=1, bias=False (must be False, as in detectron2),
        norm (module applied after the conv, key ``norm``), activation (callable).

    Raises:
        ValueError: ``bias=True`` or channels not divisible by ``groups``.

    Source: ``detectron2/layers/deform_conv.py`` ``DeformConv``; op: ``torchvision.ops.deform_conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntPair, stride: _IntPair = 1,
                 padding: _IntPair = 0, dilation: _IntPair = 1, groups: int = 1, deformable_groups: int = 1,
                 bias: bool = False, norm: Optional[nn.Module] = None,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if bias:
            raise ValueError("DeformConv does not support bias (as in detectron2); use ModulatedDeformConv")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deformable_groups, False, norm, activation)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``x (N, C_in, H, W)``, ``offset (N, 2*dg*kh*kw, H_out, W_out)`` -> ``(N, C_out, H_out, W_out)``."""
        return self._run(x, offset, None)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution v2 (Zhu et al. 2019): ``forward(x, offset, mask)``.

    Args as :class:`DeformConv` except ``bias=True`` by default (zero-initialised; ``bias=False``
    registers no ``bias`` key, as in detectron2), plus ``weight_init`` (``"kaiming"`` as detectron2,
    or ``"dcnv2"``; module docstring).

    Source: ``detectron2/layers/deform_conv.py`` ``ModulatedDeformConv``; op:
    ``torchvision.ops.deform_conv2d(..., mask=mask)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntPair, stride: _IntPair = 1,
                 padding: _IntPair = 0, dilation: _IntPair = 1, groups: int = 1, deformable_groups: int = 1,
                 bias: bool = True, norm: Optional[nn.Module] = None,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, weight_init: str = "kaiming"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deformable_groups, bias, norm, activation, weight_init)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (N, C_in, H, W)``, ``offset (N, 2*dg*kh*kw, H', W')``, ``mask (N, dg*kh*kw, H', W')``."""
        return self._run(x, offset, mask)
