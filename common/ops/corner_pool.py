"""Corner pooling (CornerNet, Law & Deng 2018, Sec. 3.4) and centre / cascade corner pooling
(CenterNet: Keypoint Triplets, Duan et al. 2019, Sec. 3.4-3.5) without a compiled extension.

The authors ship the four pools as C++ ATen loops whose backward allocates CUDA tensors
(princeton-vl/CornerNet ``models/py_utils/_cpools/src/{top,bottom,left,right}_pool.cpp``, the
same files in CornerNet-Lite and Duankaiwen/CenterNet), so their models cannot run on a CPU. Here:

* :func:`top_pool` / :func:`bottom_pool` / :func:`left_pool` / :func:`right_pool` on ``(N, C, H, W)``:
  the running maximum *towards* one border, ``top_pool(x)[..., i, j] = max_{i' >= i} x[..., i', j]``
  (TopPool scans from the bottom row upwards, so every position sees everything below it),
  ``bottom_pool``: ``max_{i' <= i}``, ``left_pool``: ``max_{j' >= j}``, ``right_pool``: ``max_{j' <= j}``.
  Forward is ``torch.cummax`` over a flipped view (the mapping mmcv uses). Backward routes the
  gradient to the arg-max as the C++ code does, which updates its arg-max only on a *strictly*
  greater value: among tied maxima the gradient goes to the first one in scan order (the one
  farthest from the output position). ``torch.cummax``'s own backward picks the last one, so a
  small autograd function computes the authors' indices from the cummax values. Any dtype that
  ``torch.cummax`` supports on the device (float32, float16/bfloat16 under autocast); CPU and CUDA.
* :func:`column_max_pool` (TopPool then BottomPool: the maximum of the whole column) and
  :func:`row_max_pool` (LeftPool then RightPool: the whole row), as the authors compose them in
  CenterNet's ``pool_cross``.
* Modules with the authors' parameter names (their checkpoints load into them unchanged):
  :class:`CornerPool` (CornerNet ``pool`` / CornerNet-Lite ``corner_pool``), :class:`CascadeCornerPool`
  (Triplets ``pool``), :class:`CenterPool` (Triplets ``pool_cross``).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from common.layers import get_norm

__all__ = [
    "POOLS",
    "top_pool",
    "bottom_pool",
    "left_pool",
    "right_pool",
    "column_max_pool",
    "row_max_pool",
    "CornerPool",
    "CascadeCornerPool",
    "CenterPool",
]


def _first_argmax_indices(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Index (along ``dim``) of the first element that reached each running maximum.

    ``values`` is a running maximum along ``dim`` (non-decreasing); the arg-max of position ``i``
    is the start of the run of equal values containing ``i``: the last ``j <= i`` where the value
    strictly increased (or 0).
    """
    n = values.shape[dim]
    ar = torch.arange(n, device=values.device).view([-1 if d == dim else 1 for d in range(values.dim())])
    prev = values.narrow(dim, 0, n - 1)
    nxt = values.narrow(dim, 1, n - 1)
    rise = torch.cat([torch.ones_like(values.narrow(dim, 0, 1), dtype=torch.bool), nxt > prev], dim)
    start = torch.where(rise, ar.expand_as(values), torch.zeros((), dtype=torch.long, device=values.device))
    return torch.cummax(start, dim).values


class _DirectionalMax(torch.autograd.Function):
    """Running max along ``dim`` (optionally scanning from the end), authors' arg-max backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, reverse: bool) -> torch.Tensor:
        xs = x.flip(dim) if reverse else x
        values = torch.cummax(xs, dim).values
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_first_argmax_indices(values, dim))
        ctx.dim, ctx.reverse = dim, reverse
        return values.flip(dim) if reverse else values

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (idx,) = ctx.saved_tensors
        dim, reverse = ctx.dim, ctx.reverse
        g = grad_out.flip(dim) if reverse else grad_out
        grad = torch.zeros_like(g).scatter_add_(dim, idx, g)
        return (grad.flip(dim) if reverse else grad), None, None


def _check(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")


def top_pool(x: torch.Tensor) -> torch.Tensor:
    """TopPool: ``out[n, c, i, j] = max_{i' >= i} x[n, c, i', j]``; ``(N, C, H, W)`` -> same shape/dtype.

    Raises: ValueError: not a 4-d tensor. Source: CornerNet Sec. 3.4, ``_cpools/src/top_pool.cpp``."""
    _check(x, "top_pool")
    return _DirectionalMax.apply(x, 2, True)


def bottom_pool(x: torch.Tensor) -> torch.Tensor:
    """BottomPool: ``out[n, c, i, j] = max_{i' <= i} x[n, c, i', j]``; ``(N, C, H, W)`` -> same.

    Raises: ValueError: not a 4-d tensor. Source: ``_cpools/src/bottom_pool.cpp``."""
    _check(x, "bottom_pool")
    return _DirectionalMax.apply(x, 2, False)


def left_pool(x: torch.Tensor) -> torch.Tensor:
    """LeftPool: ``out[n, c, i, j] = max_{j' >= j} x[n, c, i, j']``; ``(N, C, H, W)`` -> same.

    Raises: ValueError: not a 4-d tensor. Source: ``_cpools/src/left_pool.cpp``."""
    _check(x, "left_pool")
    return _DirectionalMax.apply(x, 3, True)


def right_pool(x: torch.Tensor) -> torch.Tensor:
    """RightPool: ``out[n, c, i, j] = max_{j' <= j} x[n, c, i, j']``; ``(N, C, H, W)`` -> same.

    Raises: ValueError: not a 4-d tensor. Source: ``_cpools/src/right_pool.cpp``."""
    _check(x, "right_pool")
    return _DirectionalMax.apply(x, 3, False)


def column_max_pool(x: torch.Tensor) -> torch.Tensor:
    """``bottom_pool(top_pool(x))``: every position gets the maximum of its whole column
    ``(N, C, H, W)`` -> same (Triplets ``pool_cross`` branch 1; gradients as the composed C++ pools)."""
    return bottom_pool(top_pool(x))


def row_max_pool(x: torch.Tensor) -> torch.Tensor:
    """``right_pool(left_pool(x))``: the maximum of the whole row (Triplets ``pool_cross`` branch 2)."""
    return right_pool(left_pool(x))


POOLS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "top": top_pool, "bottom": bottom_pool, "left": left_pool, "right": right_pool,
    "column": column_max_pool, "row": row_max_pool,
}


class _ConvBNReLU(nn.Module):
    """``k x k`` conv (no bias) -> BN -> ReLU, keys ``conv.weight`` and ``bn.*`` (the authors'
    ``convolution``; the same as :class:`common.modeling.backbone.hourglass.ConvBNReLU`)."""

    def __init__(self, k: int, in_channels: int, out_channels: int, norm: str = "BN"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, k, 1, (k - 1) // 2, bias=False)
        self.bn = get_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(self.bn(self.conv(x)))


def _pool_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in POOLS:
        raise ValueError(f"unknown pool {name!r}; expected one of {sorted(POOLS)}")
    return POOLS[name]


class CornerPool(nn.Module):
    """CornerNet's corner pooling module (paper Fig. 7; [CN] ``models/CornerNet.py`` ``pool``).

    ``out = conv2(relu(p_bn1(p_conv1(pool1(p1_conv1(x)) + pool2(p2_conv1(x)))) + bn1(conv1(x))))``
    with ``p1_conv1``/``p2_conv1`` 3x3 conv-BN-ReLU to ``mid_channels`` (128), ``p_conv1`` 3x3 conv
    (no bias) + ``p_bn1`` back to ``channels``, ``conv1`` 1x1 conv + ``bn1`` skip, ``conv2`` 3x3
    conv-BN-ReLU. Top-left: ``pools=("top", "left")``; bottom-right: ``("bottom", "right")``.

    ``forward(x (N, channels, H, W)) -> (N, channels, H, W)``.
    """

    def __init__(self, channels: int = 256, pools=("top", "left"), mid_channels: int = 128, norm: str = "BN"):
        super().__init__()
        self.pool1, self.pool2 = _pool_fn(pools[0]), _pool_fn(pools[1])
        self.p1_conv1 = _ConvBNReLU(3, channels, mid_channels, norm)
        self.p2_conv1 = _ConvBNReLU(3, channels, mid_channels, norm)
        self.p_conv1 = nn.Conv2d(mid_channels, channels, 3, padding=1, bias=False)
        self.p_bn1 = get_norm(norm, channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = get_norm(norm, channels)
        self.conv2 = _ConvBNReLU(3, channels, channels, norm)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of the two pooled branches, ``(N, mid_channels, H, W)``."""
        return self.pool1(self.p1_conv1(x)) + self.pool2(self.p2_conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p_bn1(self.p_conv1(self.pooled(x)))
        return self.conv2(F.relu_(p + self.bn1(self.conv1(x))))


class CascadeCornerPool(CornerPool):
    """Cascade corner pooling of CenterNet: Keypoint Triplets (paper Sec. 3.5, Fig. 5c;
    [DK] ``models/CenterNet-104.py`` ``pool``).

    Each branch first looks inside the object along the other direction, then pools towards its
    own border: branch 1 = ``pool1(P1_look_conv(p1_conv1(x) + pool2(look_conv1(x))))``, branch 2
    = ``pool2(P2_look_conv(p2_conv1(x) + pool1(look_conv2(x))))`` (``look_conv*`` 3x3
    conv-BN-ReLU, ``P*_look_conv`` 3x3 conv without bias or BN); the tail is :class:`CornerPool`'s.
    For top-left ``pools=("top", "left")``.
    """

    def __init__(self, channels: int = 256, pools=("top", "left"), mid_channels: int = 128, norm: str = "BN"):
        super().__init__(channels, pools, mid_channels, norm)
        self.look_conv1 = _ConvBNReLU(3, channels, mid_channels, norm)
        self.P1_look_conv = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False)
        self.look_conv2 = _ConvBNReLU(3, channels, mid_channels, norm)
        self.P2_look_conv = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.pool1(self.P1_look_conv(self.p1_conv1(x) + self.pool2(self.look_conv1(x))))
        b2 = self.pool2(self.P2_look_conv(self.p2_conv1(x) + self.pool1(self.look_conv2(x))))
        return b1 + b2


class CenterPool(CornerPool):
    """Centre pooling of CenterNet: Keypoint Triplets (paper Sec. 3.4, Fig. 5a; [DK] ``pool_cross``):
    :class:`CornerPool` whose branches take the maximum of the whole column (``p1_conv1``) and of
    the whole row (``p2_conv1``); the same parameters (and keys) as a corner pool."""

    def __init__(self, channels: int = 256, mid_channels: int = 128, norm: str = "BN"):
        super().__init__(channels, ("column", "row"), mid_channels, norm)
