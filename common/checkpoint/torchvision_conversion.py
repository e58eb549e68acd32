"""torchvision ImageNet ResNet -> detectron2 ResNet names (``tools/convert-torchvision-to-d2.py``).

The converted weights pair with RGB input, torchvision mean/std (``PIXEL_MEAN [123.675, 116.28,
103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]``) and ``RESNETS.STRIDE_IN_1X1 False``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping

__all__ = ["convert_torchvision_to_d2", "is_torchvision_resnet_state_dict"]

_LAYER = re.compile(r"layer([1-4])")
_BN = re.compile(r"bn([1-3])")


def convert_torchvision_to_d2(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """Rename a torchvision ResNet state dict to detectron2 ResNet names.

    Rules: keys without "layer" get the prefix ``stem.`` (so ``fc.*`` becomes ``stem.fc.*`` and
    stays unmatched); ``layer1..4`` -> ``res2..5``; ``bn1/2/3`` -> ``conv1/2/3.norm``;
    ``downsample.0`` -> ``shortcut``; ``downsample.1`` -> ``shortcut.norm``.
    Values are passed through unchanged (tensors or numpy arrays).
    """
    out: Dict[str, Any] = {}
    for k, v in state_dict.items():
        new_k = k if "layer" in k else "stem." + k
        new_k = _LAYER.sub(lambda m: "res{}".format(int(m.group(1)) + 1), new_k)
        new_k = _BN.sub(lambda m: "conv{}.norm".format(m.group(1)), new_k)
        new_k = new_k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[new_k] = v
    return out


def is_torchvision_resnet_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for a plain torchvision ResNet state dict (``conv1.weight`` + ``layer1.0.conv1.weight``)."""
    return "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict
