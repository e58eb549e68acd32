"""Training hooks (detectron2 v0.6 ``detectron2/engine/hooks.py``)."""
from __future__ import annotations

import datetime
import itertools
import logging
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.common.timer import Timer

from common.solver.lr_scheduler import LRMultiplier
from common.utils import comm
from common.utils.events import EventStorage, EventWriter

from .train_loop import HookBase

try:
    from torch.optim.lr_scheduler import LRScheduler as _TorchLRScheduler
except ImportError:  # pragma: no cover
    from torch.optim.lr_scheduler import _LRScheduler as _TorchLRScheduler

__all__ = [
    "CallbackHook",
    "IterationTimer",
    "PeriodicWriter",
    "PeriodicCheckpointer",
    "LRScheduler",
    "EvalHook",
    "PreciseBN",
]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """Call the given functions (each receives the trainer) at the matching points."""

    def __init__(
        self,
        *,
        before_train: Optional[Callable] = None,
        after_train: Optional[Callable] = None,
        before_step: Optional[Callable] = None,
        after_step: Optional[Callable] = None,
    ) -> None:
        self._before_train = before_train
        self._before_step = before_step
        self._after_step = after_step
        self._after_train = after_train

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)
        # The callbacks may be closures holding the trainer: drop them to break cycles.
        del self._before_train, self._after_train, self._before_step, self._after_step

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Put ``time`` (seconds per iteration, hooks included) into the storage and log the total.

    The first ``warmup_iter`` iterations are excluded from the summary (they include start-up costs).
    Register it first so that it times the other hooks too.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total_time = time.perf_counter() - self._start_time
        total_time_minus_hooks = self._total_timer.seconds()
        hook_time = total_time - total_time_minus_hooks
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and total_time_minus_hooks > 0:
            logger.info(
                "Overall training speed: {} iterations in {} ({:.4f} s / it)".format(
                    num_iter,
                    str(datetime.timedelta(seconds=int(total_time_minus_hooks))),
                    total_time_minus_hooks / num_iter,
                )
            )
        logger.info(
            "Total training time: {} ({} on hooks)".format(
                str(datetime.timedelta(seconds=int(total_time))),
                str(datetime.timedelta(seconds=int(hook_time))),
            )
        )

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iter_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iter_done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class PeriodicWriter(HookBase):
    """Call every writer's ``write()`` every ``period`` iterations, at the last one and at the end."""

    def __init__(self, writers: List[EventWriter], period: int = 20) -> None:
        self._writers = writers
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError("PeriodicWriter expects EventWriter instances, got {}".format(type(w)))
        self._period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or (self.trainer.iter == self.trainer.max_iter - 1):
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            # Data produced by other after_train hooks (e.g. final evaluation) is written too.
            writer.write()
            writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """fvcore's ``PeriodicCheckpointer`` as a hook: saves ``model_{iter:07d}.pth`` when
    ``(iter + 1) % period == 0`` and ``model_final.pth`` at ``max_iter - 1`` (keeping at most
    ``max_to_keep`` periodic files). Each file carries ``"iteration"``."""

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        self.step(self.trainer.iter)


def _get_best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
    # Report the LR of the group with the most parameters; if every group has one parameter
    # (no merging happened), the most common LR.
    largest_group = max(len(g["params"]) for g in optimizer.param_groups)
    if largest_group == 1:
        lr_count = Counter([g["lr"] for g in optimizer.param_groups])
        lr = lr_count.most_common()[0][0]
        for i, g in enumerate(optimizer.param_groups):
            if g["lr"] == lr:
                return i
    for i, g in enumerate(optimizer.param_groups):
        if len(g["params"]) == largest_group:
            return i
    return 0


class LRScheduler(HookBase):
    """Put ``lr`` into the storage and step the LR scheduler after every iteration.

    Args:
        optimizer, scheduler: default to ``trainer.optimizer`` / ``trainer.scheduler``; a fvcore
            ``ParamScheduler`` is wrapped into an :class:`LRMultiplier` over ``trainer.max_iter``.
    """

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if isinstance(self.scheduler, ParamScheduler):
            self._scheduler = LRMultiplier(
                self._optimizer, self.scheduler, self.trainer.max_iter, last_iter=self.trainer.iter - 1
            )
        self._best_param_group_id = _get_best_param_group_id(self._optimizer)

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    @property
    def scheduler(self) -> Any:
        return self._scheduler or self.trainer.scheduler

    def state_dict(self) -> Dict[str, Any]:
        if isinstance(self.scheduler, _TorchLRScheduler):
            return self.scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if isinstance(self.scheduler, _TorchLRScheduler):
            logger.info("Loading scheduler from state_dict ...")
            self.scheduler.load_state_dict(state_dict)


class EvalHook(HookBase):
    """Run ``eval_function()`` every ``eval_period`` iterations and after the last iteration.

    An evaluation due exactly at ``max_iter`` is done once, by ``after_train``. E.g. with
    ``max_iter=30``: period 15 -> 2 calls (iters 15, 30); ``max_iter=31``, period 15 -> 3 calls;
    period 0 -> 1 call (end only). Results (a nested dict of numbers) are put into the storage
    as ``"<task>/<metric>"`` scalars without smoothing.

    Raises:
        ValueError: ``eval_function`` returned a value that is not a dict of numbers.
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Optional[Mapping[str, Any]]]) -> None:
        self._period = int(eval_period)
        self._func = eval_function

    def _do_eval(self) -> None:
        from common.evaluation.testing import flatten_results_dict

        results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise ValueError("Eval function must return a dict. Got {} instead.".format(results))
            flattened = flatten_results_dict(results)
            for k, v in flattened.items():
                try:
                    flattened[k] = float(v)
                except Exception as e:
                    raise ValueError(
                        "[EvalHook] eval_function should return a nested dict of float. "
                        "Got '{}: {}' instead.".format(k, v)
                    ) from e
            self.trainer.storage.put_scalars(**flattened, smoothing_hint=False)
        # Evaluation may take different time on different ranks: keep them in step.
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0:
            # The final evaluation is done by after_train.
            if next_iter != self.trainer.max_iter:
                self._do_eval()

    def after_train(self) -> None:
        # Only evaluate when training finished (not after an exception).
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()
        # The function may be a closure holding the trainer: drop it.
        del self._func


class PreciseBN(HookBase):
    """Recompute BatchNorm running statistics with ``num_iter`` batches (fvcore
    ``update_bn_stats``) every ``period`` iterations and after the last one.

    Disabled with a log message when the model has no BatchNorm layer in training mode.
    """

    def __init__(self, period: int, model: torch.nn.Module, data_loader: Iterable, num_iter: int) -> None:
        from fvcore.nn.precise_bn import get_bn_modules

        if len(get_bn_modules(model)) == 0:
            logger.info("PreciseBN is disabled because model does not contain BN layers in training mode.")
            self._disabled = True
            return
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._period = period
        self._disabled = False
        self._data_iter = None

    def after_step(self) -> None:
        if self._disabled:
            return
        next_iter = self.trainer.iter + 1
        is_final = next_iter == self.trainer.max_iter
        if is_final or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def update_stats(self) -> None:
        from fvcore.nn.precise_bn import update_bn_stats

        if self._disabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)

        def data_loader():
            for num_iter in itertools.count(1):
                if num_iter % 100 == 0:
                    logger.info("Running precise-BN ... {}/{} iterations.".format(num_iter, self._num_iter))
                yield next(self._data_iter)

        with EventStorage():  # the model may put scalars during forward
            logger.info(
                "Running precise-BN for {} iterations...  Note that this could produce different "
                "statistics every time.".format(self._num_iter)
            )
            update_bn_stats(self._model, data_loader(), self._num_iter)
