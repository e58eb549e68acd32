"""Learning-rate schedules (detectron2 v0.6 ``detectron2/solver/lr_scheduler.py``).

Schedules are fvcore ``ParamScheduler`` objects (a multiplier as a function of training progress
in [0, 1)); :class:`LRMultiplier` turns one into a per-iteration torch LR scheduler.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Any, Dict, List

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

try:  # torch >= 2.0 public name; older releases only have the underscored one
    from torch.optim.lr_scheduler import LRScheduler as _TorchLRScheduler
except ImportError:  # pragma: no cover
    from torch.optim.lr_scheduler import _LRScheduler as _TorchLRScheduler

__all__ = ["WarmupParamScheduler", "LRMultiplier", "WarmupMultiStepLR", "WarmupCosineLR"]

logger = logging.getLogger(__name__)


class WarmupParamScheduler(CompositeParamScheduler):
    """Prepend a warm-up phase to ``scheduler``.

    During the first ``warmup_length`` fraction of training the multiplier goes from
    ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)`` (``"linear"``) or stays at
    ``warmup_factor * scheduler(0)`` (``"constant"``); afterwards it is ``scheduler(where)``.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        end_value = scheduler(warmup_length)
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(
                "SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {!r}".format(warmup_method)
            )
        # "fixed": the main schedule keeps its own time axis, i.e. it is not restarted after warm-up.
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(_TorchLRScheduler):
    """``lr(iter) = base_lr * multiplier(iter / max_iter)`` for every param group.

    Call ``step()`` once per iteration (the ``LRScheduler`` hook does). The state dict holds only
    ``base_lrs`` and ``last_epoch`` (the iteration), so a resumed run with a different
    ``max_iter`` follows the new schedule.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(
                "LRMultiplier(multiplier=) must be a fvcore ParamScheduler, got {}".format(
                    type(multiplier)
                )
            )
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        multiplier = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def _get_warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError("Unknown warmup method: {}".format(method))


class WarmupMultiStepLR(_TorchLRScheduler):
    """Legacy closed-form schedule: ``base_lr * warmup(it) * gamma ** #(milestones <= it)``.

    Kept for code that instantiates it directly; ``build_lr_scheduler`` returns the equivalent
    :class:`LRMultiplier`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: List[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError("Milestones should be a list of increasing integers, got {}".format(milestones))
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        wf = _get_warmup_factor_at_iter(
            self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor
        )
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * wf * decay for base_lr in self.base_lrs]


class WarmupCosineLR(_TorchLRScheduler):
    """Legacy closed-form schedule: ``base_lr * warmup(it) * 0.5 * (1 + cos(pi * it / max_iters))``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        wf = _get_warmup_factor_at_iter(
            self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor
        )
        cos = 0.5 * (1.0 + math.cos(math.pi * self.last_epoch / self.max_iters))
        return [base_lr * wf * cos for base_lr in self.base_lrs]
