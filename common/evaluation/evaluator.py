"""Evaluator interface and the inference loop (detectron2 v0.6 ``detectron2/evaluation/evaluator.py``).

``inference_on_dataset`` runs a model over a data loader in eval mode without gradients,
feeds every batch to a ``DatasetEvaluator`` and reports timing per iteration per device.
"""
from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict, abc
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from common.utils.comm import get_world_size, is_main_process
from common.utils.logger import log_every_n_seconds

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]


class DatasetEvaluator:
    """Base class of evaluators: accumulate model outputs over a dataset, then compute metrics.

    The loop calls ``reset()`` once, ``process(inputs, outputs)`` for every batch and
    ``evaluate()`` at the end. Source: detectron2 ``evaluation/evaluator.py``.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation (drop accumulated state)."""

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Record one batch.

        Args:
            inputs: the model inputs (dataset dicts after the mapper), one per image.
            outputs: the model outputs, aligned with ``inputs``.
        """

    def evaluate(self) -> Optional[Dict[str, Any]]:
        """Compute metrics over everything processed since ``reset``.

        Returns:
            ``{task_name: {metric_name: float}}`` on the main process; ``None``/``{}`` where a
            rank has nothing to report (e.g. non-main ranks in distributed evaluation).
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Forward every call to a list of evaluators and merge their result dicts.

    Raises:
        ValueError: two evaluators report the same top-level key.
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Dict[str, Any]:
        results: Dict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not is_main_process() or result is None:
                continue
            for key, value in result.items():
                if key in results:
                    raise ValueError(
                        f"Different evaluators produce results with the same key {key!r} "
                        f"({type(evaluator).__name__} among {[type(e).__name__ for e in self._evaluators]})"
                    )
                results[key] = value
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Temporarily switch ``model`` to eval mode; its previous training flag is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def inference_on_dataset(
    model: Union[nn.Module, Any],
    data_loader: Iterable,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
) -> Dict[str, Any]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate with ``evaluator``.

    The model is put in eval mode (``inference_context``, only when it is an ``nn.Module``) and
    run under ``torch.no_grad()``. Timing skips the first ``min(5, len - 1)`` warm-up
    iterations, as detectron2 does; times are per iteration per device.

    Args:
        model: a callable taking a batch (list of dicts) and returning a list of output dicts.
        data_loader: an iterable of batches; ``len(data_loader)`` gives the iteration count.
        evaluator: a ``DatasetEvaluator``, a list of them (merged with ``DatasetEvaluators``),
            or ``None`` to only benchmark.

    Returns:
        ``evaluator.evaluate()``, or ``{}`` when it returns ``None`` (e.g. on non-main ranks).
    """
    num_devices = get_world_size()
    logger = logging.getLogger(__name__)
    total = len(data_loader)  # type: ignore[arg-type]
    logger.info("Start inference on {} batches".format(total))

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, abc.MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    num_warmup = min(5, total - 1)
    start_time = time.perf_counter()
    data_time = compute_time = eval_time = 0.0
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())

        data_start = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            data_time += time.perf_counter() - data_start
            if idx == num_warmup:
                # Warm-up iterations (cudnn autotune, lazy allocation) are excluded from timing.
                start_time = time.perf_counter()
                data_time = compute_time = eval_time = 0.0

            compute_start = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # kernels are asynchronous: wait so compute time is real
            compute_time += time.perf_counter() - compute_start

            eval_start = time.perf_counter()
            evaluator.process(inputs, outputs)
            eval_time += time.perf_counter() - eval_start

            iters = idx + 1 - (num_warmup if idx >= num_warmup else 0)
            compute_per_iter = compute_time / iters
            if idx >= num_warmup * 2 or compute_per_iter > 5:
                total_per_iter = (time.perf_counter() - start_time) / iters
                eta = datetime.timedelta(seconds=int(total_per_iter * (total - idx - 1)))
                log_every_n_seconds(
                    logging.INFO,
                    f"Inference done {idx + 1}/{total}. "
                    f"Dataloading: {data_time / iters:.4f} s/iter. "
                    f"Inference: {compute_per_iter:.4f} s/iter. "
                    f"Eval: {eval_time / iters:.4f} s/iter. "
                    f"Total: {total_per_iter:.4f} s/iter. "
                    f"ETA={eta}",
                    n=5,
                    name=__name__,
                )
            data_start = time.perf_counter()

    total_time = time.perf_counter() - start_time
    timed_iters = max(total - num_warmup, 1)
    logger.info(
        "Total inference time: {} ({:.6f} s / iter per device, on {} devices)".format(
            datetime.timedelta(seconds=total_time), total_time / timed_iters, num_devices
        )
    )
    logger.info(
        "Total inference pure compute time: {} ({:.6f} s / iter per device, on {} devices)".format(
            datetime.timedelta(seconds=int(compute_time)), compute_time / timed_iters, num_devices
        )
    )

    results = evaluator.evaluate()
    # An evaluator may return None on non-main ranks; callers index the result, so give a dict.
    return {} if results is None else results
