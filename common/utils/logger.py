"""Logging set-up with detectron2's behaviour (``detectron2/utils/logger.py``).

``setup_logger`` prints to stdout on rank 0 and writes ``log.txt`` (``log.txt.rank{r}`` on
other ranks) when given an output directory.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections import Counter
from typing import Optional

from tabulate import tabulate
from termcolor import colored


class _ColorfulFormatter(logging.Formatter):
    def __init__(self, *args, **kwargs):
        self._root_name = kwargs.pop("root_name") + "."
        self._abbrev_name = kwargs.pop("abbrev_name", "")
        if len(self._abbrev_name):
            self._abbrev_name = self._abbrev_name + "."
        super().__init__(*args, **kwargs)

    def formatMessage(self, record):
        record.name = record.name.replace(self._root_name, self._abbrev_name)
        log = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            prefix = colored("WARNING", "red", attrs=["blink"])
        elif record.levelno in (logging.ERROR, logging.CRITICAL):
            prefix = colored("ERROR", "red", attrs=["blink", "underline"])
        else:
            return log
        return prefix + " " + log


@functools.lru_cache()  # so that calling setup_logger multiple times won't add many handlers
def setup_logger(
    output: Optional[str] = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "common",
    abbrev_name: Optional[str] = None,
) -> logging.Logger:
    """Initialise the logger ``name`` and set its verbosity level to DEBUG.

    Args:
        output: a file name ending in ``.txt``/``.log`` or a directory (then ``log.txt`` in it).
        distributed_rank: only rank 0 prints to stdout; other ranks log to ``<file>.rank{r}``.
        name: logger name; ``abbrev_name`` shortens it in console lines.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if abbrev_name is None:
        abbrev_name = "d2" if name == "common" else name

    plain_formatter = logging.Formatter(
        "[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"
    )
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.DEBUG)
        if color:
            formatter = _ColorfulFormatter(
                colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s",
                datefmt="%m/%d %H:%M:%S",
                root_name=name,
                abbrev_name=str(abbrev_name),
            )
        else:
            formatter = plain_formatter
        ch.setFormatter(formatter)
        logger.addHandler(ch)

    if output is not None:
        if output.endswith(".txt") or output.endswith(".log"):
            filename = output
        else:
            filename = os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = filename + ".rank{}".format(distributed_rank)
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.StreamHandler(_cached_log_stream(filename))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(plain_formatter)
        logger.addHandler(fh)
    return logger


@functools.lru_cache(maxsize=None)
def _cached_log_stream(filename: str):
    return open(filename, "a", buffering=1)


def _find_caller():
    frame = sys._getframe(2)
    while frame:
        code = frame.f_code
        if os.path.join("utils", "logger.") not in code.co_filename:
            mod_name = frame.f_globals["__name__"]
            if mod_name == "__main__":
                mod_name = "common"
            return mod_name, (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return "common", ("", 0, "")


_LOG_COUNTER: Counter = Counter()
_LOG_TIMER: dict = {}


def log_first_n(lvl: int, msg: str, n: int = 1, *, name: Optional[str] = None, key: str = "caller") -> None:
    """Log ``msg`` only the first ``n`` times it is reached from the same call site."""
    caller_module, caller_key = _find_caller()
    hash_key = caller_key if key == "caller" else (caller_key, msg)
    _LOG_COUNTER[hash_key] += 1
    if _LOG_COUNTER[hash_key] <= n:
        logging.getLogger(name or caller_module).log(lvl, msg)


def log_every_n_seconds(lvl: int, msg: str, n: float = 1, *, name: Optional[str] = None) -> None:
    """Log ``msg`` at most once every ``n`` seconds from the same call site."""
    caller_module, key = _find_caller()
    last_logged = _LOG_TIMER.get(key, None)
    current_time = time.time()
    if last_logged is None or current_time - last_logged >= n:
        logging.getLogger(name or caller_module).log(lvl, msg)
        _LOG_TIMER[key] = current_time


def create_small_table(small_dict: dict) -> str:
    """A one-row table of ``small_dict`` (keys as header), values with 3 decimals."""
    keys, values = tuple(zip(*small_dict.items()))
    return tabulate(
        [values], headers=keys, tablefmt="pipe", floatfmt=".3f", stralign="center", numalign="center"
    )
