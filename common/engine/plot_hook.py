"""Training curves from ``metrics.json``: :func:`plot_metrics` and the :class:`PlotMetricsHook`.

``metrics.json`` is the JSON-lines file of :class:`common.utils.events.JSONWriter` (one object
per written iteration with an ``"iteration"`` key). The figure has one panel per curve:

* ``total_loss`` and every per-term loss (keys starting with ``loss``), log y-scale when the
  values are positive and span more than a factor of 10;
* ``lr`` (log scale under the same rule, e.g. across warm-up);
* every evaluation metric (keys with a ``/``, as :class:`~common.engine.hooks.EvalHook` flattens
  them: ``bbox/AP``, ``bbox/AP50``, ..., ``bbox/AP-<class>``), drawn with markers. When a task has
  more than :data:`MAX_PER_CLASS_PANELS` per-class metrics (COCO's 80 classes), they share one
  panel instead.

This is the analysis tool of mmdetection (``tools/analysis_tools/analyze_logs.py plot_curve``)
and Ultralytics (``results.png``) for detectron2's output layout. Rendering uses matplotlib's Agg
canvas directly (no ``pyplot``, no global backend change), so it works headless and in workers.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from .train_loop import HookBase

__all__ = ["load_metrics", "metric_panels", "plot_metrics", "PlotMetricsHook", "MAX_PER_CLASS_PANELS"]

logger = logging.getLogger(__name__)

#: Above this many ``<task>/AP-<class>`` keys per task, the per-class curves share one panel.
MAX_PER_CLASS_PANELS = 12

Series = Tuple[List[int], List[float]]


def load_metrics(json_file: str) -> Dict[str, Series]:
    """Read a ``metrics.json`` into ``{name: (iterations, values)}`` (iterations ascending).

    When an iteration appears more than once (a resumed run appends to the file), the value
    written last wins. A truncated last line (a run killed while writing) is skipped with a
    warning; non-numeric values are ignored.

    Raises:
        FileNotFoundError: ``json_file`` does not exist.
        ValueError: a line other than the last is not a JSON object with an integer
            ``"iteration"`` (the message names the file and line number).
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"metrics file {json_file!r} does not exist (is OUTPUT_DIR right?)")
    with open(json_file) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    by_name: Dict[str, Dict[int, float]] = OrderedDict()
    for lineno, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            itr = int(record["iteration"])
        except (ValueError, KeyError, TypeError) as e:
            if lineno == len(lines):
                logger.warning(f"{json_file}: skipping the unreadable last line {lineno} ({e})")
                continue
            raise ValueError(f"{json_file}, line {lineno}: not a metrics record with an 'iteration' ({e})") from e
        for name, value in record.items():
            if name == "iteration" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            by_name.setdefault(name, {})[itr] = float(value)
    out: Dict[str, Series] = OrderedDict()
    for name, points in by_name.items():
        iters = sorted(points)
        out[name] = (iters, [points[i] for i in iters])
    return out


def _is_loss(name: str) -> bool:
    return name == "total_loss" or name.startswith("loss")


_SUMMARY_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _eval_order(name: str, names: Sequence[str]) -> Tuple[str, int, int]:
    task, _, metric = name.rpartition("/")
    if metric in _SUMMARY_ORDER:
        return task, 0, _SUMMARY_ORDER.index(metric)
    return task, 2 if metric.startswith("AP-") else 1, list(names).index(name)


def metric_panels(names: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """The panels of :func:`plot_metrics` for the metric ``names`` of a ``metrics.json``.

    Returns:
        ``[(title, [metric names drawn in it]), ...]`` in order: ``total_loss``, per-term losses
        (sorted), ``lr``, evaluation metrics per task (AP, AP50, AP75, APs, APm, APl, other
        metrics, then ``AP-<class>`` in file order, grouped into one panel per task when there are
        more than :data:`MAX_PER_CLASS_PANELS`).
    """
    names = list(names)
    panels: List[Tuple[str, List[str]]] = []
    if "total_loss" in names:
        panels.append(("total_loss", ["total_loss"]))
    panels += [(n, [n]) for n in sorted(n for n in names if _is_loss(n) and n != "total_loss")]
    if "lr" in names:
        panels.append(("lr", ["lr"]))
    # JSONWriter sorts keys: put COCO's summary metrics first, in their usual order.
    evals = sorted((n for n in names if "/" in n), key=lambda n: _eval_order(n, names))
    per_class: Dict[str, List[str]] = OrderedDict()
    for n in evals:
        task, _, metric = n.rpartition("/")
        if metric.startswith("AP-"):
            per_class.setdefault(task, []).append(n)
    grouped = {task for task, keys in per_class.items() if len(keys) > MAX_PER_CLASS_PANELS}
    done = set()
    for n in evals:
        task, _, metric = n.rpartition("/")
        if metric.startswith("AP-") and task in grouped:
            if task not in done:
                done.add(task)
                panels.append((f"{task}/AP-<class> ({len(per_class[task])} classes)", per_class[task]))
            continue
        panels.append((n, [n]))
    return panels


def _use_log_scale(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 10.0


def plot_metrics(json_file: str, output_file: Optional[str] = None, ncols: int = 4, panel_size: float = 3.2):
    """Draw every curve of ``json_file`` (see the module docstring), one panel each.

    Args:
        json_file: a ``metrics.json``.
        output_file: PNG path to write (e.g. ``OUTPUT_DIR/curves.png``); nothing written if None.
        ncols: panels per row.
        panel_size: inches per panel side (100 dpi).

    Returns:
        the ``matplotlib.figure.Figure``; ``fig.axes`` holds exactly one ``Axes`` per panel, in
        the order of :func:`metric_panels`, each titled with the panel's title.

    Raises:
        FileNotFoundError / ValueError: see :func:`load_metrics`; ValueError also when the file
            holds no losses, lr or evaluation metrics.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = load_metrics(json_file)
    panels = metric_panels(list(series))
    if not panels:
        raise ValueError(f"{json_file}: no losses, lr or evaluation metrics to plot (keys: {sorted(series)})")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    all_iters = [i for iters, _ in series.values() for i in iters]
    x_range = (min(all_iters), max(all_iters)) if all_iters else (0, 1)
    fig = Figure(figsize=(panel_size * ncols, panel_size * 0.8 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for k, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        is_eval = "/" in keys[0]
        values: List[float] = []
        for key in keys:
            iters, vals = series[key]
            values += vals
            ax.plot(iters, vals, marker="o" if is_eval else None, markersize=3, linewidth=1.2,
                    label=key.rpartition("/")[2] if len(keys) > 1 else None)
        if not is_eval and _use_log_scale(values):
            ax.set_yscale("log")
        if not any(math.isfinite(v) for v in values):
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        if 1 < len(keys) <= 10:
            ax.legend(fontsize=6)
        if x_range[1] > x_range[0]:
            pad = 0.03 * (x_range[1] - x_range[0])
            ax.set_xlim(x_range[0] - pad, x_range[1] + pad)  # one time axis for all panels
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(json_file))) or json_file, fontsize=10)
    fig.tight_layout()
    if output_file:
        os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
        tmp = output_file + ".tmp.png"
        fig.savefig(tmp)
        os.replace(tmp, output_file)  # never leave a half-written curves.png
    return fig


def _last_iteration(json_file: str) -> int:
    """Iteration of the last complete record of ``json_file`` (-1 when none)."""
    try:
        with open(json_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode("utf-8", errors="ignore").splitlines()
    except OSError:
        return -1
    for line in reversed(lines):
        try:
            return int(json.loads(line)["iteration"])
        except (ValueError, KeyError, TypeError):
            continue
    return -1


class PlotMetricsHook(HookBase):
    """Write ``OUTPUT_DIR/curves.png`` (:func:`plot_metrics` of ``OUTPUT_DIR/metrics.json``) at the
    end of training and after each evaluation.

    Register it on the main process *after* ``PeriodicWriter`` (hooks run in order), so that the
    file already holds the final evaluation when ``after_train`` plots. An evaluation during
    training (scalars put without smoothing, as ``EvalHook`` does) is plotted as soon as a writer
    has written its iteration to ``metrics.json`` (at the writer's next period). A plotting
    failure is logged, never raised: curves must not stop a training run.
    """

    def __init__(self, output_dir: str, metrics_file: str = "metrics.json", filename: str = "curves.png") -> None:
        self._json = os.path.join(output_dir, metrics_file)
        self._png = os.path.join(output_dir, filename)
        self._seen_eval_iter = -1
        self._pending_iter: Optional[int] = None
        self._size = -1
        self.plotted_at: List[int] = []  # iterations at which curves.png was (re)written

    def _plot(self) -> None:
        try:
            plot_metrics(self._json, self._png)
            self.plotted_at.append(int(self.trainer.iter))
        except Exception as e:  # e.g. no metrics yet, disk full
            logger.warning(f"PlotMetricsHook: could not write {self._png}: {type(e).__name__}: {e}")

    def after_step(self) -> None:
        storage = self.trainer.storage
        hints = storage.smoothing_hints()
        eval_iters = [itr for k, (_, itr) in storage.latest().items() if hints.get(k) is False]
        if eval_iters and max(eval_iters) > self._seen_eval_iter:
            self._seen_eval_iter = self._pending_iter = max(eval_iters)
        if self._pending_iter is None:
            return
        size = os.path.getsize(self._json) if os.path.isfile(self._json) else -1
        if size == self._size:
            return
        self._size = size
        if _last_iteration(self._json) >= self._pending_iter:
            self._pending_iter = None
            self._plot()

    def after_train(self) -> None:
        if os.path.isfile(self._json):
            self._plot()
