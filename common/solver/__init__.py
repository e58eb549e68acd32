"""Optimizers and LR schedules with detectron2's names (``detectron2/solver``)."""
from .build import (
    GradientClipType,
    build_lr_scheduler,
    build_optimizer,
    build_optimizer_uniform_decay,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)
from .lr_scheduler import LRMultiplier, WarmupCosineLR, WarmupMultiStepLR, WarmupParamScheduler

__all__ = [
    "GradientClipType",
    "build_lr_scheduler",
    "build_optimizer",
    "build_optimizer_uniform_decay",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "reduce_param_groups",
    "LRMultiplier",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupParamScheduler",
]
