#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet checkpoint to detectron2's pickle format.

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

The output is ``{"model": {name: ndarray}, "__author__": "torchvision", "matching_heuristics":
True}``, which ``DetectionCheckpointer`` loads into ``backbone.bottom_up.*`` (FPN) or
``backbone.*`` (plain ResNet) by suffix matching. Pair it with RGB input, torchvision's mean/std
and ``MODEL.RESNETS.STRIDE_IN_1X1 False`` (as the Sparse R-CNN / OneNet configs do).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.checkpoint.torchvision_conversion import convert_torchvision_to_d2  # noqa: E402


def convert(src: str, dst: str) -> Dict[str, np.ndarray]:
    """Read a torchvision ResNet ``.pth`` (weights only) and write the detectron2 ``.pkl``.

    Raises:
        ValueError: ``src`` does not hold a torchvision ResNet state dict.
    """
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if "layer1.0.conv1.weight" not in state:
        raise ValueError(f"{src} is not a torchvision ResNet state dict (no 'layer1.0.conv1.weight')")
    model = {k: v.detach().cpu().numpy() for k, v in convert_torchvision_to_d2(state).items()}
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    os.replace(tmp, dst)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="torchvision ResNet checkpoint (.pth)")
    parser.add_argument("dst", help="output detectron2 pickle (.pkl)")
    a = parser.parse_args()
    converted = convert(a.src, a.dst)
    print(f"wrote {len(converted)} tensors to {a.dst}")
