"""Frozen batch norm and the norm-layer factory (detectron2 ``layers/batch_norm.py``)."""
from __future__ import annotations

import logging
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenBatchNorm2d", "get_norm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel. All four
    tensors are buffers (no parameters, no ``num_batches_tracked``), so optimizers never see them
    but checkpoints carry them. Initialised to the identity transform (``running_var = 1 - eps``).

    The state dict is versioned (``_version = 3``): loading a version < 2 checkpoint that lacks
    ``running_mean``/``running_var`` fills them with 0/1; loading a version-2 checkpoint (which
    stored ``var`` without ``+ eps``) subtracts ``eps`` from ``running_var``. Unversioned dicts
    (e.g. converted torchvision weights) are taken as is apart from the missing-stat fill.

    Source: ``detectron2/layers/batch_norm.py`` ``FrozenBatchNorm2d`` (detectron2 v0.3 as vendored
    by Sparse R-CNN / OneNet for the load-time upgrade).
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape and dtype."""
        if x.requires_grad:
            # F.batch_norm would allocate grad buffers for the frozen stats; a fused affine does not
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # very old checkpoints carried only weight/bias: identity statistics
            if prefix + "running_mean" not in state_dict:
                state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
            if prefix + "running_var" not in state_dict:
                state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        if version is not None and version < 3 and prefix + "running_var" in state_dict:
            logging.getLogger(__name__).info(
                "FrozenBatchNorm %s is upgraded to version 3.", prefix.rstrip(".")
            )
            # versions < 3 applied running_var without + eps in forward
            state_dict[prefix + "running_var"] = state_dict[prefix + "running_var"] - self.eps
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a FrozenBatchNorm2d.

        Children are replaced in place (same attribute name and position, so state-dict key order
        is unchanged); when ``module`` itself is a batch norm a new module is returned.
        Statistics, affine parameters and eps are copied.
        """
        bn_types = (nn.modules.batchnorm.BatchNorm2d, nn.modules.batchnorm.SyncBatchNorm)
        res = module
        if isinstance(module, bn_types):
            res = cls(module.num_features, eps=module.eps)
            if module.affine:
                res.weight.data = module.weight.data.clone().detach()
                res.bias.data = module.bias.data.clone().detach()
            res.running_mean.data = module.running_mean.data
            res.running_var.data = module.running_var.data
        else:
            for name, child in module.named_children():
                new_child = cls.convert_frozen_batchnorm(child)
                if new_child is not child:
                    res.add_module(name, new_child)
        return res


_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "nnSyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(32, channels),
}


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int) -> Optional[nn.Module]:
    """Build a normalisation layer for ``out_channels`` channels.

    Args:
        norm: ``"BN"`` (BatchNorm2d), ``"SyncBN"`` / ``"nnSyncBN"`` (nn.SyncBatchNorm),
            ``"FrozenBN"`` (:class:`FrozenBatchNorm2d`), ``"GN"`` (GroupNorm with 32 groups),
            ``""`` or None (no norm), or a callable ``channels -> nn.Module``.
        out_channels: number of channels.

    Returns:
        the module, or None for no normalisation.

    Raises:
        ValueError: unknown norm name (e.g. a typo in ``MODEL.RESNETS.NORM`` or ``MODEL.FPN.NORM``).

    Source: ``detectron2/layers/batch_norm.py`` ``get_norm``.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if len(norm) == 0:
            return None
        if norm not in _NORMS:
            raise ValueError(f"Unknown norm '{norm}'; expected one of {sorted(_NORMS)} or ''")
        norm = _NORMS[norm]
    return norm(out_channels)
