"""Training-time metric storage and writers (detectron2 v0.6 ``detectron2/utils/events.py``).

The training loop puts scalars into the current :class:`EventStorage`; writers
(:class:`JSONWriter`, :class:`TensorboardXWriter`, :class:`CommonMetricPrinter`) periodically read
it and emit ``metrics.json`` lines, TensorBoard events and the console progress line.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = [
    "get_event_storage",
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "CommonMetricPrinter",
]

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost :class:`EventStorage` entered with ``with EventStorage(): ...``.

    Raises:
        AssertionError: when called outside any ``with EventStorage()`` block.
    """
    assert len(_CURRENT_STORAGE_STACK), (
        "get_event_storage() has to be called inside a 'with EventStorage(...)' context!"
    )
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Per-iteration storage of scalars (with history), images and histograms.

    Scalars are kept in fvcore ``HistoryBuffer`` objects (one per name), tagged with the iteration at
    which they were put. ``smoothing_hint`` tells writers whether to report the median over a
    window (True, for noisy values such as losses) or the latest value (False, e.g. ``lr`` or
    evaluation results).
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._current_prefix = ""
        self._vis_data: List[Tuple[str, Any, int]] = []
        self._histograms: List[Dict[str, Any]] = []

    def put_image(self, img_name: str, img_tensor: Any) -> None:
        """Queue an image for TensorBoard.

        Args:
            img_tensor: ``(3, H, W)`` float tensor/array in [0, 1], RGB.
        """
        self._vis_data.append((img_name, img_tensor, self._iter))

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True) -> None:
        """Record ``value`` (a number or a 0-d tensor) under ``name`` at the current iteration.

        Raises:
            AssertionError: if ``name`` was put before with a different ``smoothing_hint``.
        """
        name = self._current_prefix + name
        value = float(value)
        self._history[name].update(value, self._iter)
        self._latest_scalars[name] = (value, self._iter)
        existing_hint = self._smoothing_hints.get(name)
        if existing_hint is not None:
            assert existing_hint == smoothing_hint, (
                "Scalar {} was put with a different smoothing_hint!".format(name)
            )
        else:
            self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs: Any) -> None:
        """Put several scalars at once, e.g. ``storage.put_scalars(loss=1.0, acc=0.5)``."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        """Queue a histogram of ``hist_tensor`` (any shape) for TensorBoard."""
        ht_min, ht_max = hist_tensor.min().item(), hist_tensor.max().item()
        hist_counts = torch.histc(hist_tensor.float(), bins=bins)
        hist_edges = torch.linspace(start=ht_min, end=ht_max, steps=bins + 1, dtype=torch.float32)
        self._histograms.append(
            dict(
                tag=hist_name,
                min=ht_min,
                max=ht_max,
                num=len(hist_tensor),
                sum=float(hist_tensor.sum()),
                sum_squares=float(torch.sum(hist_tensor**2)),
                bucket_limits=hist_edges[1:].tolist(),
                bucket_counts=hist_counts.tolist(),
                global_step=self._iter,
            )
        )

    def history(self, name: str) -> HistoryBuffer:
        """The ``HistoryBuffer`` of ``name``.

        Raises:
            KeyError: if nothing was ever put under ``name``.
        """
        ret = self._history.get(name, None)
        if ret is None:
            raise KeyError("No history metric available for {}!".format(name))
        return ret

    def histories(self) -> Dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like :meth:`latest`, but smoothed scalars report the median of their last
        ``window_size`` values."""
        result = {}
        for k, (v, itr) in self._latest_scalars.items():
            result[k] = (
                self._history[k].median(window_size) if self._smoothing_hints[k] else v,
                itr,
            )
        return result

    def smoothing_hints(self) -> Dict[str, bool]:
        return self._smoothing_hints

    def step(self) -> None:
        """Advance the iteration counter (the trainer sets :attr:`iter` directly instead)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """Iteration that newly put scalars are tagged with."""
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @property
    def iteration(self) -> int:  # backward-compatible alias used by older detectron2 code
        return self._iter

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        assert _CURRENT_STORAGE_STACK[-1] == self
        _CURRENT_STORAGE_STACK.pop()

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix every scalar put inside the block with ``name + "/"``."""
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def clear_images(self) -> None:
        self._vis_data = []

    def clear_histograms(self) -> None:
        self._histograms = []


class EventWriter:
    """Base class of writers that read the current :class:`EventStorage`."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Append scalars to a JSON-lines file (``metrics.json``).

    One JSON object per line and per iteration that has new scalars, with an ``"iteration"`` key,
    e.g. ``{"data_time": 0.01, "iteration": 19, "lr": 0.0002, "total_loss": 1.3}``.
    Smoothed scalars are the median of the last ``window_size`` values.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file_handle = open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        to_save: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write:
                continue  # already written at an earlier call
            to_save[itr][k] = v
        if to_save:
            all_iters = sorted(to_save.keys())
            self._last_write = max(all_iters)
        for itr, scalars in sorted(to_save.items()):
            scalars["iteration"] = itr
            self._file_handle.write(json.dumps(scalars, sort_keys=True) + "\n")
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except (AttributeError, OSError):
            pass

    def close(self) -> None:
        self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Write scalars (and queued images/histograms) to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any) -> None:
        """
        Args:
            log_dir: directory for ``events.out.tfevents.*``.
            kwargs: passed to ``torch.utils.tensorboard.SummaryWriter``.
        """
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is optional at import time

        self._window_size = window_size
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last_write = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last_write = max(new_last_write, itr)
        self._last_write = new_last_write
        if len(storage._vis_data) >= 1:
            for img_name, img, step_num in storage._vis_data:
                self._writer.add_image(img_name, img, step_num)
            storage.clear_images()
        if len(storage._histograms) >= 1:
            for params in storage._histograms:
                self._writer.add_histogram_raw(**params)
            storage.clear_histograms()

    def close(self) -> None:
        if hasattr(self, "_writer"):
            self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Print the usual progress line to the ``common.utils.events`` logger.

    Format: ``eta: 0:01:02  iter: 19  total_loss: 1.23  loss_x: 0.4  time: 0.1234  data_time:
    0.0100  lr: 0.0002  max_mem: 1234M`` (``max_mem`` only with CUDA). Losses are medians over
    ``window_size`` iterations; ETA uses the median iteration time over the last 1000 iterations.
    """

    def __init__(self, max_iter: Optional[int] = None, window_size: int = 20) -> None:
        self.logger = logging.getLogger(__name__)
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: Optional[Tuple[int, float]] = None  # (iteration, wall time)

    def _get_eta(self, storage: EventStorage) -> Optional[str]:
        if self._max_iter is None:
            return ""
        iteration = storage.iter
        try:
            eta_seconds = storage.history("time").median(1000) * (self._max_iter - iteration - 1)
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(eta_seconds)))
        except KeyError:
            # No "time" history yet (IterationTimer warm-up): estimate from the wall clock.
            eta_string = None
            if self._last_write is not None:
                estimate_iter_time = (time.perf_counter() - self._last_write[1]) / (
                    iteration - self._last_write[0]
                )
                eta_seconds = estimate_iter_time * (self._max_iter - iteration - 1)
                eta_string = str(datetime.timedelta(seconds=int(eta_seconds)))
            self._last_write = (iteration, time.perf_counter())
            return eta_string

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            # Training finished: this writer only reports progress, nothing to add.
            return
        try:
            data_time: Optional[float] = storage.history("data_time").avg(20)
        except KeyError:
            data_time = None
        try:
            iter_time: Optional[float] = storage.history("time").global_avg()
        except KeyError:
            iter_time = None
        try:
            lr = "{:.5g}".format(storage.history("lr").latest())
        except KeyError:
            lr = "N/A"
        eta_string = self._get_eta(storage)
        if torch.cuda.is_available():
            max_mem_mb: Optional[float] = torch.cuda.max_memory_allocated() / 1024.0 / 1024.0
        else:
            max_mem_mb = None
        losses = "  ".join(
            "{}: {:.4g}".format(k, v.median(self._window_size))
            for k, v in storage.histories().items()
            if "loss" in k
        )
        self.logger.info(
            " {eta}iter: {iter}  {losses}  {time}{data_time}lr: {lr}  {memory}".format(
                eta=f"eta: {eta_string}  " if eta_string else "",
                iter=iteration,
                losses=losses,
                time="time: {:.4f}  ".format(iter_time) if iter_time is not None else "",
                data_time="data_time: {:.4f}  ".format(data_time) if data_time is not None else "",
                lr=lr,
                memory="max_mem: {:.0f}M".format(max_mem_mb) if max_mem_mb is not None else "",
            )
        )
