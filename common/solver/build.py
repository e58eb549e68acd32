"""Optimizer and LR-scheduler builders (detectron2 v0.6 ``detectron2/solver/build.py``).

Additions used by the projects (Sparse R-CNN / OneNet ``train_net.py``): ``SOLVER.OPTIMIZER``
("SGD" | "ADAMW" | "ADAM"), ``SOLVER.BACKBONE_MULTIPLIER`` (LR factor for parameters whose name contains
"backbone") and the ``"full_model"`` gradient-clipping type (one ``clip_grad_norm_`` over all
parameters before every step); :func:`build_optimizer_uniform_decay` is those authors'
``build_optimizer`` (one weight decay for every parameter).
"""
from __future__ import annotations

import copy
import itertools
import logging
from enum import Enum
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Type, Union

import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from .lr_scheduler import LRMultiplier, WarmupParamScheduler

__all__ = [
    "GradientClipType",
    "build_optimizer",
    "build_optimizer_uniform_decay",
    "build_lr_scheduler",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
    "reduce_param_groups",
]

logger = logging.getLogger(__name__)

_GradientClipperInput = Union[torch.Tensor, Iterable[torch.Tensor]]
_GradientClipper = Callable[[_GradientClipperInput], None]

NORM_MODULE_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


class GradientClipType(Enum):
    """``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` values.

    * ``value``: clamp every gradient element of each parameter to ``[-CLIP_VALUE, CLIP_VALUE]``.
    * ``norm``: rescale each parameter's gradient separately so its ``NORM_TYPE`` norm is at most
      ``CLIP_VALUE`` (detectron2 applies this per parameter tensor).
    * ``full_model``: rescale all gradients together so the norm over the whole model is at most
      ``CLIP_VALUE`` (the authors' Sparse R-CNN / OneNet ``train_net.py``).
    """

    VALUE = "value"
    NORM = "norm"
    FULL_MODEL = "full_model"


def _clip_type(cfg: Any) -> GradientClipType:
    try:
        return GradientClipType(cfg.CLIP_TYPE)
    except ValueError:
        raise ValueError(
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {}, got {!r}".format(
                [t.value for t in GradientClipType], cfg.CLIP_TYPE
            )
        ) from None


def _generate_optimizer_class_with_gradient_clipping(
    optimizer: Type[torch.optim.Optimizer],
    *,
    per_param_clipper: Optional[_GradientClipper] = None,
    global_clipper: Optional[_GradientClipper] = None,
) -> Type[torch.optim.Optimizer]:
    """A subclass of ``optimizer`` whose ``step`` clips gradients first (one of the two clippers)."""
    assert (per_param_clipper is None) != (global_clipper is None), (
        "Exactly one of per_param_clipper/global_clipper must be given."
    )

    def optimizer_wgc_step(self, closure=None):
        if per_param_clipper is not None:
            for group in self.param_groups:
                for p in group["params"]:
                    per_param_clipper(p)
        else:
            all_params = itertools.chain(*[g["params"] for g in self.param_groups])
            global_clipper(all_params)
        return super(OptimizerWithGradientClip, self).step(closure)

    OptimizerWithGradientClip = type(
        optimizer.__name__ + "WithGradientClip", (optimizer,), {"step": optimizer_wgc_step}
    )
    return OptimizerWithGradientClip


def maybe_add_gradient_clipping(
    cfg: Any, optimizer: Union[Type[torch.optim.Optimizer], torch.optim.Optimizer]
) -> Union[Type[torch.optim.Optimizer], torch.optim.Optimizer]:
    """Wrap an optimizer class (or instance) with gradient clipping per ``SOLVER.CLIP_GRADIENTS``.

    Args:
        cfg: the full config (reads ``cfg.SOLVER.CLIP_GRADIENTS.{ENABLED,CLIP_TYPE,CLIP_VALUE,NORM_TYPE}``).
        optimizer: a ``torch.optim.Optimizer`` subclass or instance.

    Returns:
        the unchanged input when clipping is disabled; otherwise a clipping subclass (for a class
        input) or the same instance with its ``__class__`` swapped.

    Raises:
        ValueError: unknown ``CLIP_TYPE``.
    """
    clip_cfg = cfg.SOLVER.CLIP_GRADIENTS
    if not clip_cfg.ENABLED:
        return optimizer
    optimizer_type = type(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    assert issubclass(optimizer_type, torch.optim.Optimizer), optimizer_type
    clip_type = _clip_type(clip_cfg)
    clip_value = float(clip_cfg.CLIP_VALUE)
    norm_type = float(clip_cfg.NORM_TYPE)

    def clip_norm(p: _GradientClipperInput) -> None:
        torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)

    def clip_value_fn(p: _GradientClipperInput) -> None:
        torch.nn.utils.clip_grad_value_(p, clip_value)

    if clip_type == GradientClipType.FULL_MODEL:
        new_type = _generate_optimizer_class_with_gradient_clipping(
            optimizer_type, global_clipper=clip_norm
        )
    else:
        new_type = _generate_optimizer_class_with_gradient_clipping(
            optimizer_type,
            per_param_clipper=clip_norm if clip_type == GradientClipType.NORM else clip_value_fn,
        )
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.__class__ = new_type
        return optimizer
    return new_type


def get_default_optimizer_params(
    model: torch.nn.Module,
    base_lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    weight_decay_norm: Optional[float] = None,
    bias_lr_factor: Optional[float] = 1.0,
    weight_decay_bias: Optional[float] = None,
    backbone_multiplier: float = 1.0,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """Parameter groups with per-parameter hyper-parameters.

    Rules, applied in this order to every trainable parameter (each shared parameter once):
    defaults ``lr=base_lr, weight_decay=weight_decay``; parameters of normalisation modules
    (BatchNorm/SyncBN/GroupNorm/InstanceNorm/LayerNorm) get ``weight_decay_norm``; parameters
    named ``bias`` get ``lr = base_lr * bias_lr_factor`` and ``weight_decay_bias``; ``overrides``
    (by parameter name) are applied; finally the lr of any parameter whose full name contains
    "backbone" is multiplied by ``backbone_multiplier`` (Sparse R-CNN ``train_net.py``).
    Groups with equal hyper-parameters are merged (:func:`reduce_param_groups`).

    Returns:
        list of ``{"params": [...], "lr": ..., "weight_decay": ...}`` dicts for a torch optimizer.
    """
    if overrides is None:
        overrides = {}
    defaults: Dict[str, Any] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: Dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("bias_lr_factor requires base_lr")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError("Conflicting overrides for 'bias'")
        overrides = dict(overrides, bias=bias_overrides)

    params: List[Dict[str, Any]] = []
    memo: Set[torch.nn.Parameter] = set()
    for module_name, module in model.named_modules():
        for param_name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in memo:
                continue
            memo.add(value)
            hyperparams = copy.copy(defaults)
            if isinstance(module, NORM_MODULE_TYPES) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            hyperparams.update(overrides.get(param_name, {}))
            full_name = "{}.{}".format(module_name, param_name) if module_name else param_name
            if backbone_multiplier != 1.0 and "backbone" in full_name:
                hyperparams["lr"] = hyperparams["lr"] * backbone_multiplier
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def reduce_param_groups(params: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merge single-parameter groups that share all hyper-parameters (keeps first-seen order)."""
    groups: Dict[tuple, List[torch.nn.Parameter]] = {}
    for item in params:
        key = tuple(sorted((k, v) for k, v in item.items() if k != "params"))
        groups.setdefault(key, []).extend(item["params"])
    return [{"params": ps, **dict(key)} for key, ps in groups.items()]


def build_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer from ``cfg.SOLVER``.

    ``SOLVER.OPTIMIZER``: ``"SGD"`` (``MOMENTUM``, ``NESTEROV``), ``"ADAMW"`` or ``"ADAM"`` (torch
    defaults for betas/eps, as in the authors' code). Hyper-parameter groups: see
    :func:`get_default_optimizer_params` (``BASE_LR``, ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM``,
    ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS`` (None = follow ``WEIGHT_DECAY``, detectron2 v0.6),
    ``BACKBONE_MULTIPLIER``). Gradient clipping: see :func:`maybe_add_gradient_clipping`.
    The Sparse R-CNN / OneNet authors' recipe is :func:`build_optimizer_uniform_decay`.

    Raises:
        ValueError: unknown ``SOLVER.OPTIMIZER`` / ``CLIP_TYPE``, or a model without trainable params.
    """
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        backbone_multiplier=float(solver.get("BACKBONE_MULTIPLIER", 1.0)),
    )
    if not params:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return _make_optimizer(cfg, params)


_OPTIMIZERS = ("SGD", "ADAMW", "ADAM")


def _make_optimizer(cfg: Any, params: List[Dict[str, Any]]) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` on ``params``, wrapped by :func:`maybe_add_gradient_clipping`."""
    solver = cfg.SOLVER
    name = str(solver.get("OPTIMIZER", "SGD")).upper()
    if name == "SGD":
        opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
        return opt_cls(
            params,
            lr=solver.BASE_LR,
            momentum=solver.MOMENTUM,
            nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY,
        )
    if name == "ADAMW":
        opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        return opt_cls(params, lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY)
    if name == "ADAM":
        # CenterNet authors' main.py: torch.optim.Adam(model.parameters(), lr), torch defaults.
        opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.Adam)
        return opt_cls(params, lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY)
    raise ValueError("SOLVER.OPTIMIZER must be one of {}, got {!r}".format(list(_OPTIMIZERS), solver.OPTIMIZER))


def build_optimizer_uniform_decay(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of the Sparse R-CNN and OneNet authors' ``train_net.py`` (``Trainer.build_optimizer``,
    inherited from DETR's detectron2 wrapper).

    Every trainable parameter (each shared one once) gets ``lr = SOLVER.BASE_LR`` (times
    ``SOLVER.BACKBONE_MULTIPLIER`` when its full name contains "backbone") and
    ``weight_decay = SOLVER.WEIGHT_DECAY``: norms, biases and embeddings included, i.e.
    ``WEIGHT_DECAY_NORM``, ``WEIGHT_DECAY_BIAS`` and ``BIAS_LR_FACTOR`` are not used.
    ``SOLVER.OPTIMIZER``: ``"ADAMW"`` (torch defaults: betas (0.9, 0.999), eps 1e-8) or ``"SGD"``
    (``MOMENTUM``; ``NESTEROV`` False in every config of theirs). Clipping as
    :func:`maybe_add_gradient_clipping` (``CLIP_TYPE "full_model"``: one ``clip_grad_norm_`` over all
    parameters with max norm ``CLIP_VALUE`` before each step, as theirs; other types per parameter,
    as detectron2's).

    Sources: PeizeSun/SparseR-CNN and PeizeSun/OneNet ``projects/*/train_net.py``.

    Raises:
        ValueError: unknown ``SOLVER.OPTIMIZER`` / ``CLIP_TYPE``, or no trainable parameter.
    """
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=None,
        bias_lr_factor=1.0,
        weight_decay_bias=None,
        backbone_multiplier=float(solver.get("BACKBONE_MULTIPLIER", 1.0)),
    )
    if not params:
        raise ValueError("build_optimizer_uniform_decay: the model has no trainable parameters")
    return _make_optimizer(cfg, params)


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Build the per-iteration LR scheduler from ``cfg.SOLVER``.

    ``LR_SCHEDULER_NAME``: ``"WarmupMultiStepLR"`` (multiply by ``GAMMA`` at each of ``STEPS``;
    steps >= ``MAX_ITER`` are ignored with a warning) or ``"WarmupCosineLR"`` (half cosine from 1
    to 0 over ``MAX_ITER``); both with a ``WARMUP_METHOD`` warm-up over ``WARMUP_ITERS``
    iterations starting at ``WARMUP_FACTOR``.

    Raises:
        ValueError: unknown scheduler name, non-increasing ``SOLVER.STEPS``.
    """
    solver = cfg.SOLVER
    name = solver.LR_SCHEDULER_NAME
    max_iter = int(solver.MAX_ITER)
    if max_iter <= 0:
        raise ValueError("SOLVER.MAX_ITER must be positive, got {}".format(max_iter))
    if name == "WarmupMultiStepLR":
        steps = [int(x) for x in solver.STEPS if x < max_iter]
        if len(steps) != len(solver.STEPS):
            logger.warning(
                "SOLVER.STEPS contains values >= SOLVER.MAX_ITER ({}); they will be ignored.".format(
                    max_iter
                )
            )
        if any(b <= a for a, b in zip([0] + steps, steps)):
            raise ValueError(
                "SOLVER.STEPS must be strictly increasing positive iterations, got {}".format(
                    tuple(solver.STEPS)
                )
            )
        sched = MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=max_iter,
        )
    elif name == "WarmupCosineLR":
        sched = CosineParamScheduler(1, 0)
    else:
        raise ValueError(
            "SOLVER.LR_SCHEDULER_NAME must be 'WarmupMultiStepLR' or 'WarmupCosineLR', got {!r}".format(
                name
            )
        )
    sched = WarmupParamScheduler(
        sched,
        solver.WARMUP_FACTOR,
        min(solver.WARMUP_ITERS / max_iter, 1.0),
        solver.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
