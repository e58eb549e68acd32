"""Minimal training loops with hooks (detectron2 v0.6 ``detectron2/engine/train_loop.py``).

``TrainerBase`` runs ``before_train``; for each iteration ``before_step``, ``run_step``,
``after_step``; then ``after_train``, calling the same methods of every registered
:class:`HookBase`. ``SimpleTrainer.run_step`` is exactly: data -> loss dict -> sum -> zero_grad ->
backward -> metrics -> ``optimizer.step()``; everything else (LR schedule, checkpoints, evaluation,
logging) lives in hooks.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from common.utils import comm
from common.utils.events import EventStorage, get_event_storage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; override any subset of the methods.

    Each method receives nothing: the trainer is available as ``self.trainer`` (a weak proxy set
    by :meth:`TrainerBase.register_hooks`), its storage as ``self.trainer.storage`` and the current
    iteration as ``self.trainer.iter``.
    """

    trainer: "TrainerBase" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """Hook state to checkpoint (none by default)."""
        return {}


class TrainerBase:
    """Iteration-based trainer with hooks.

    Attributes:
        iter: current iteration; ``max_iter`` after a completed ``train``.
        start_iter, max_iter: the iteration range ``[start_iter, max_iter)``.
        storage: the :class:`EventStorage` open during training.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order."""
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError("register_hooks() expects HookBase instances, got {}".format(type(h)))
            # A weak proxy avoids a trainer <-> hook reference cycle.
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``; exceptions are logged and re-raised."""
        logger.info("Starting training from iteration {}".format(start_iter))
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # After a full run ``iter == max_iter`` (``range`` leaves it at max_iter - 1).
                self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        # Scalars put during this step are tagged with the current iteration.
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        ret: Dict[str, Any] = {"iteration": self.iter}
        hooks_state = {}
        for h in self._hooks:
            sd = h.state_dict()
            if sd:
                name = type(h).__qualname__
                if name in hooks_state:
                    continue  # two hooks of one type: cannot tell their states apart
                hooks_state[name] = sd
        if hooks_state:
            ret["hooks"] = hooks_state
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.iter = state_dict["iteration"]
        for key, value in state_dict.get("hooks", {}).items():
            for h in self._hooks:
                if type(h).__qualname__ == key and hasattr(h, "load_state_dict"):
                    h.load_state_dict(value)
                    break
            else:
                logger.warning("Cannot find the hook '{}', its state_dict is ignored.".format(key))


def _check_loss_dict(loss_dict: Any) -> Dict[str, torch.Tensor]:
    if isinstance(loss_dict, torch.Tensor):
        loss_dict = {"total_loss": loss_dict}
    if not isinstance(loss_dict, Mapping):
        raise TypeError(
            "In training mode the model must return a dict of scalar loss tensors, got {}".format(
                type(loss_dict)
            )
        )
    for k, v in loss_dict.items():
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise ValueError(
                "Loss '{}' must be a scalar tensor, got {}".format(
                    k, tuple(v.shape) if isinstance(v, torch.Tensor) else type(v)
                )
            )
    return dict(loss_dict)


class SimpleTrainer(TrainerBase):
    """One optimizer, one data loader, one model returning a loss dict.

    ``run_step``: ``data = next(loader)``; ``loss_dict = model(data)`` (a dict of scalar tensors);
    ``losses = sum(loss_dict.values())``; ``zero_grad``; ``backward``; write metrics; ``step``.

    Metrics written to the storage each step (main process, averaged over ranks): every loss,
    ``total_loss`` and ``data_time`` (max over ranks, seconds).

    Non-finite losses: when the summed loss (averaged over ranks) is NaN/Inf, every rank logs the
    loss dict and raises ``FloatingPointError("Loss became infinite or NaN at iteration=N! ...")``
    before ``optimizer.step()``, so the weights are never updated with NaN gradients.
    """

    def __init__(self, model: torch.nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer

    @property
    def _data_loader_iter(self):
        # Created lazily so that building a trainer does not start data-loading workers.
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def run_step(self) -> None:
        assert self.model.training, "[SimpleTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        loss_dict = _check_loss_dict(self.model(data))
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = "") -> None:
        """Average the losses over ranks and put them into the storage (main process).

        Raises:
            FloatingPointError: the total loss is NaN or infinite (on every rank).
        """
        metrics_dict: Dict[str, float] = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
        metrics_dict["data_time"] = data_time
        # all_gather (not gather) so that every rank sees a NaN and raises, instead of the
        # other ranks hanging in the next collective.
        all_metrics = comm.all_gather(metrics_dict)
        data_time_max = float(np.max([x.pop("data_time") for x in all_metrics]))
        metrics_dict = {k: float(np.mean([x[k] for x in all_metrics])) for k in all_metrics[0].keys()}
        total_losses_reduced = sum(metrics_dict.values())
        if not np.isfinite(total_losses_reduced):
            msg = "Loss became infinite or NaN at iteration={}!\nloss_dict = {}".format(self.iter, metrics_dict)
            logger.error(msg)
            raise FloatingPointError(msg)
        if comm.is_main_process():
            storage = get_event_storage()
            storage.put_scalar("data_time", data_time_max)
            storage.put_scalar("{}total_loss".format(prefix), total_losses_reduced)
            if len(metrics_dict) > 1:
                storage.put_scalars(**{prefix + k: v for k, v in metrics_dict.items()})

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["optimizer"] = self.optimizer.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])


def _model_device_type(model: torch.nn.Module) -> str:
    for p in model.parameters():
        return p.device.type
    return "cpu"


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with automatic mixed precision (``SOLVER.AMP.ENABLED``).

    The forward pass runs under ``torch.autocast(device_type, dtype=precision)``. Defaults:
    float16 with a ``torch.amp.GradScaler`` on CUDA; bfloat16 without scaling on CPU (float16
    autocast is not supported there, and bfloat16 has float32's range so needs no loss scaling).
    Losses should be computed in float32 by the model (autocast leaves reductions in float32).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        grad_scaler: Optional["torch.amp.GradScaler"] = None,
        precision: Optional[torch.dtype] = None,
    ) -> None:
        if isinstance(model, DistributedDataParallel):
            unsupported = "AMPTrainer does not support single-process multi-device training!"
            assert not (model.device_ids and len(model.device_ids) > 1), unsupported
        assert not isinstance(model, DataParallel), "AMPTrainer does not support DataParallel!"
        super().__init__(model, data_loader, optimizer)
        self.device_type = _model_device_type(model)
        if precision is None:
            precision = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        self.precision = precision
        if grad_scaler is None:
            # Only float16 needs loss scaling; a disabled scaler is a transparent pass-through.
            grad_scaler = torch.amp.GradScaler(self.device_type, enabled=precision == torch.float16)
        self.grad_scaler = grad_scaler

    def run_step(self) -> None:
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            loss_dict = _check_loss_dict(self.model(data))
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        # step() unscales first, so gradient clipping inside optimizer.step sees true gradients.
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
