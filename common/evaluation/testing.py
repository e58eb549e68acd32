"""Result printing and regression checks (detectron2 v0.6 ``detectron2/evaluation/testing.py``)."""
from __future__ import annotations

import logging
import pprint
import sys
from collections.abc import Mapping
from typing import Any, Dict

import numpy as np

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict"]


def print_csv_format(results: Mapping) -> None:
    """Log ``{task: {metric: value}}`` as comma-separated lines that are easy to paste into a sheet.

    Per-category entries (keys containing ``-``, e.g. ``AP-RBC``) are left out, as in detectron2.
    Non-dict values are logged as ``task=value``.

    Raises:
        TypeError: ``results`` is neither a mapping nor empty.
    """
    if not isinstance(results, Mapping) and len(results):
        raise TypeError(f"print_csv_format expects a dict of results, got {type(results).__name__}: {results!r}")
    logger = logging.getLogger(__name__)
    for task, res in results.items():
        if isinstance(res, Mapping):
            main = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: {}".format(task))
            logger.info("copypaste: " + ",".join(k for k, _ in main))
            logger.info("copypaste: " + ",".join("{0:.4f}".format(v) for _, v in main))
        else:
            logger.info(f"copypaste: {task}={res}")


def verify_results(cfg: Any, results: Mapping) -> bool:
    """Compare ``results`` with ``cfg.TEST.EXPECTED_RESULTS``.

    ``EXPECTED_RESULTS`` is a list of ``[task, metric, expected, tolerance]``; a metric passes
    when it exists, is finite and ``|actual - expected| <= tolerance``.

    Returns:
        True when everything passes (or nothing is expected).

    Raises:
        SystemExit(1): some check failed (after logging expected and actual results), as detectron2
            does so that CI jobs fail.
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not len(expected_results):
        return True

    ok = True
    for entry in expected_results:
        if len(entry) != 4:
            raise ValueError(
                f"TEST.EXPECTED_RESULTS entries must be [task, metric, expected, tolerance], got {entry!r}"
            )
        task, metric, expected, tolerance = entry
        actual = results.get(task, {}).get(metric, None)
        if actual is None or not np.isfinite(actual) or abs(actual - expected) > tolerance:
            ok = False

    logger = logging.getLogger(__name__)
    if not ok:
        logger.error("Result verification failed!")
        logger.error("Expected Results: " + str(expected_results))
        logger.error("Actual Results: " + pprint.pformat(results))
        sys.exit(1)
    logger.info("Results verification passed.")
    return ok


def flatten_results_dict(results: Mapping) -> Dict[str, Any]:
    """Flatten nested dicts: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (keys joined with ``/``)."""
    flat: Dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat
