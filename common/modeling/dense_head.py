"""Building blocks of dense (one-stage, per-location) detection heads: FCOS, ATSS, VFNet, AutoAssign.

* :class:`Scale`: the learnable per-level scalar of FCOS-style regression branches.
* :func:`build_dense_tower`: ``num_convs x [3x3 conv -> GroupNorm(32) -> ReLU]`` as one
  ``nn.Sequential`` (state-dict keys ``{3i}.weight`` for the convs, ``{3i+1}.*`` for the norms, as
  the official FCOS ``cls_tower``, AdelaiDet and cvpods ``cls_subnet`` name them), optionally with a
  modulated deformable last conv (:class:`ModulatedDeformConvPack`).
* :func:`compute_locations`: the image coordinates of the feature-map cells of a level.
* :func:`permute_to_N_HWA_K`: head output ``(N, A*K, H, W)`` -> ``(N, H*W*A, K)``.
* :func:`reduce_mean_across_processes`: the all-reduced loss normaliser (number of positives).
* :func:`pad_gt_instances`: a batch of GT ``Instances`` as padded ``(B, M, ...)`` tensors, the input
  of the batched assigners in :mod:`common.assigners`.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from common.layers import ModulatedDeformConv
from common.utils import comm

__all__ = [
    "ModulatedDeformConvPack",
    "Scale",
    "build_dense_tower",
    "compute_locations",
    "init_dense_head_convs",
    "pad_gt_instances",
    "permute_to_N_HWA_K",
    "prior_prob_bias",
    "reduce_mean_across_processes",
]


def prior_prob_bias(prior_prob: float) -> float:
    """Bias ``b`` with ``sigmoid(b) = prior_prob``: ``-log((1 - p) / p)`` (RetinaNet, Lin et al. 2017,
    Sec. 4.1 "Initialization"; -4.595 for 0.01).

    Raises:
        ValueError: ``prior_prob`` outside (0, 1).
    """
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior probability must be in (0, 1), got {prior_prob}")
    return -math.log((1.0 - prior_prob) / prior_prob)


class Scale(nn.Module):
    """``x * scale`` with one learnable scalar (FCOS Sec. 3.2 ``exp(s_i x)``; the authors' ``Scale``).

    The parameter ``scale`` has shape ``(1,)`` as in the official FCOS, AdelaiDet and cvpods
    (mmcv's ``Scale`` holds a 0-d tensor: its checkpoints are reshaped on load by the mmdet format).
    """

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ModulatedDeformConvPack(ModulatedDeformConv):
    """Modulated deformable 3x3 conv (DCNv2) that predicts its own offsets and mask from its input.

    ``conv_offset`` (plain conv, zero-initialised so that training starts as a regular conv) gives
    ``3 * k * k`` channels, split into thirds ``(o1, o2, mask)``: ``offset = cat(o1, o2)`` (read as
    interleaved ``(dy, dx)`` per kernel tap), ``mask = sigmoid(third)``, as mmcv's
    ``ModulatedDeformConv2dPack`` and detectron2's ``DeformBottleneckBlock`` do. Keys: ``weight``
    (``bias`` when ``bias=True``), ``conv_offset.{weight,bias}`` (mmdet's names inside its tower
    ``ConvModule``\\ s, e.g. ``cls_convs.2.conv.conv_offset.weight`` of VFNet-DCN).

    Computed by ``torchvision.ops.deform_conv2d`` through :class:`common.layers.ModulatedDeformConv`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, deformable_groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, deformable_groups=deformable_groups, bias=bias)
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(in_channels, 3 * deformable_groups * kh * kw, kernel_size=self.kernel_size,
                                     stride=self.stride, padding=self.padding, dilation=self.dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x (N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``."""
        o1, o2, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        return super().forward(x, torch.cat((o1, o2), dim=1), mask.sigmoid())


def build_dense_tower(
    in_channels: int,
    num_convs: int,
    *,
    out_channels: Optional[int] = None,
    norm: str = "GN",
    num_groups: int = 32,
    conv_bias: bool = True,
    deformable_last: bool = False,
) -> nn.Sequential:
    """``num_convs x [3x3 conv (stride 1, pad 1) -> norm -> ReLU]`` as one ``nn.Sequential``.

    Keys: ``{3i}.weight`` (+ ``{3i}.bias`` when ``conv_bias``), ``{3i+1}.{weight,bias}`` (GroupNorm);
    without norm the layers are ``[conv, ReLU]`` and the convs sit at ``2i``. ``conv_bias=True`` is the
    official FCOS / AdelaiDet / cvpods tower (biased convs before GN); mmdetection's ``ConvModule``
    with GN has no conv bias (``conv_bias=False``), which loses nothing: GN removes a constant.

    Args:
        in_channels: input channels of the first conv.
        num_convs: number of conv blocks (0 gives an empty ``Sequential``, the identity).
        out_channels: channels of every conv (default ``in_channels``).
        norm: ``"GN"`` (``GroupNorm(num_groups, C)``, eps 1e-5, affine) or ``""`` (none).
        conv_bias: give the convs a bias.
        deformable_last: the last conv is a :class:`ModulatedDeformConvPack` (FCOS
            ``USE_DCN_IN_TOWER``, mmdet ``dcn_on_last_conv``), bias as ``conv_bias``.

    Init: normal(0, 0.01) weights, zero biases (FCOS/RetinaNet head init); GN weight 1, bias 0.

    Raises:
        ValueError: unknown ``norm``, ``num_convs < 0`` or channels not divisible by ``num_groups``.
    """
    out_channels = in_channels if out_channels is None else out_channels
    if num_convs < 0:
        raise ValueError(f"a dense-head tower needs num_convs >= 0, got {num_convs}")
    if norm not in ("GN", ""):
        raise ValueError(f"dense-head tower norm must be 'GN' or '', got {norm!r}")
    if norm == "GN" and out_channels % num_groups:
        raise ValueError(f"GroupNorm({num_groups}) needs channels divisible by {num_groups}, got {out_channels}")
    layers: List[nn.Module] = []
    channels = in_channels
    for i in range(num_convs):
        if deformable_last and i == num_convs - 1:
            conv: nn.Module = ModulatedDeformConvPack(channels, out_channels, 3, padding=1, bias=conv_bias)
        else:
            conv = nn.Conv2d(channels, out_channels, kernel_size=3, stride=1, padding=1, bias=conv_bias)
        layers.append(conv)
        if norm == "GN":
            layers.append(nn.GroupNorm(num_groups, out_channels))
        layers.append(nn.ReLU())
        channels = out_channels
    tower = nn.Sequential(*layers)
    init_dense_head_convs(tower)
    return tower


def init_dense_head_convs(module: nn.Module, std: float = 0.01) -> None:
    """Normal(0, ``std``) weights and zero biases for every conv in ``module`` (plain ``nn.Conv2d``
    and deformable convs; the zero-initialised offset convs of :class:`ModulatedDeformConvPack` are
    left as they are); GroupNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, ModulatedDeformConvPack):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and not _is_offset_conv(module, m):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _is_offset_conv(root: nn.Module, conv: nn.Module) -> bool:
    return any(isinstance(m, ModulatedDeformConvPack) and m.conv_offset is conv for m in root.modules())


def compute_locations(h: int, w: int, stride: int, offset: float = 0.5,
                      device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Image coordinates of the cells of an ``h x w`` feature map of the given stride.

    Cell ``(i, j)`` (row, column) sits at ``(j * stride + offset * stride, i * stride + offset * stride)``:

    * ``offset=0.5`` (default): the cell centre ``j*s + s//2`` of the official FCOS / AdelaiDet
      (``compute_locations``; the strides 8..128 are even, so ``s//2 == s/2``);
    * ``offset=0.0``: the cell corner ``j*s`` of mmdet VFNet with ATSS (``center_offset=0``) and of
      cvpods AutoAssign (``SHIFT_GENERATOR.OFFSET 0``).

    Returns:
        ``(h * w, 2)`` ``(x, y)`` in input pixels, row-major (index ``i * w + j``).
    """
    shift = offset * stride
    xs = torch.arange(w, dtype=dtype, device=device) * stride + shift
    ys = torch.arange(h, dtype=dtype, device=device) * stride + shift
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1)


def permute_to_N_HWA_K(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, A*K, H, W)`` -> ``(N, H*W*A, K)`` (location-major, as detectron2's RetinaNet)."""
    n, _, h, w = tensor.shape
    tensor = tensor.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2)
    return tensor.reshape(n, -1, k)


def reduce_mean_across_processes(value: float, device: torch.device | str = "cpu", min_value: float = 1.0) -> float:
    """``max(sum over processes of value / world size, min_value)``: the normaliser of the dense
    detectors' losses (FCOS ``num_pos_avg_per_gpu``, mmdet ``reduce_mean``), identical to ``value``
    (clamped) in a single process."""
    total = comm.all_reduce_sum(float(value), device=device)
    return max(total / comm.get_world_size(), min_value)


def pad_gt_instances(targets: Sequence, device: torch.device, num_classes: Optional[int] = None,
                     key: str = "NUM_CLASSES") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GT ``Instances`` of B images as padded tensors.

    Args:
        targets: B ``Instances`` with ``gt_boxes`` (XYXY_ABS pixels of the network input) and
            ``gt_classes`` (int64); an image may have no boxes.
        num_classes: when given, classes outside ``[0, num_classes)`` raise.
        key: the config key named in that error.

    Returns:
        ``gt_boxes (B, M, 4)`` float32 (zeros where padded), ``gt_classes (B, M)`` int64 (-1 where
        padded), ``valid (B, M)`` bool, with ``M = max(1, max boxes per image)``.

    Raises:
        ValueError: a class id outside ``[0, num_classes)``.
    """
    b = len(targets)
    m = max([1] + [len(t) for t in targets])
    boxes = torch.zeros(b, m, 4, dtype=torch.float32, device=device)
    classes = torch.full((b, m), -1, dtype=torch.int64, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t)
        if n == 0:
            continue
        c = t.gt_classes.to(device=device, dtype=torch.int64)
        if num_classes is not None and (int(c.min()) < 0 or int(c.max()) >= num_classes):
            raise ValueError(f"GT class ids must lie in [0, {num_classes}) ({key}); got {sorted(set(c.tolist()))}")
        boxes[i, :n] = t.gt_boxes.tensor.to(device=device, dtype=torch.float32)
        classes[i, :n] = c
        valid[i, :n] = True
    return boxes, classes, valid
