"""Environment helpers: seeding and an environment report (``detectron2/utils/env.py``)."""
from __future__ import annotations

import logging
import os
import random
import sys
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
    """A short table of the versions that matter for bug reports (python, torch, cuda, ...)."""
    import torchvision

    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", "")),
        ("numpy", np.__version__),
        ("PyTorch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("CUDA available", torch.cuda.is_available()),
    ]
    if torch.cuda.is_available():
        rows.append(("GPU 0", torch.cuda.get_device_name(0)))
        rows.append(("CUDA (torch)", torch.version.cuda))
    try:
        import fvcore

        rows.append(("fvcore", fvcore.__version__))
    except Exception:  # pragma: no cover - fvcore is a hard dependency
        pass
    return "\n".join("{:<16} {}".format(k, v) for k, v in rows)


if __name__ == "__main__":
    print(collect_env_info())
