"""Environment helpers: seeding and an environment report (``detectron2/utils/env.py``)."""
from __future__ import annotations

import logging
import os
import random
from datetime import datetime
from typing import Optional

import numpy as np
import torch


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seed Python, NumPy and torch RNGs; a negative/None seed draws one from the clock and pid.

    Returns:
        the seed used.
    """
    if seed is None or seed < 0:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % (2**31)
        logging.getLogger(__name__).info("Using a generated random seed {}".format(seed))
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def collect_env_info() -> str:
    """The environment table of :func:`common.utils.collect_env.collect_env_info` (detectron2's
    form): versions of python, torch, torchvision, CUDA/cuDNN, GPUs, fvcore, pycocotools, the COCO
    evaluator backend, and whether torchvision's compiled ops load."""
    from common.utils.collect_env import collect_env_info as _collect

    return _collect()


if __name__ == "__main__":
    print(collect_env_info())
