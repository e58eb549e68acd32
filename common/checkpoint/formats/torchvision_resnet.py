"""torchvision ImageNet ResNet files (``resnet50-0676ba61.pth``): a bare state dict of the
classification network, renamed to detectron2's ResNet names and placed by suffix matching
(the rest of the detector is expected to be missing)."""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping

import torch

from ..torchvision_conversion import convert_torchvision_to_d2
from . import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat, strip_prefix, tensor_items

_RESNET_KEY = re.compile(r"^(conv1\.|bn1\.|fc\.|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])\.)")


@CHECKPOINT_FORMAT_REGISTRY.register()
class TorchvisionResNetFormat(CheckpointFormat):
    """Every key is a torchvision ResNet key (``conv1.weight``, ``layer1.0.conv1.weight``, ...,
    ``fc.*``); a file that also holds other modules (e.g. a whole detector built on a torchvision
    ResNet) is not this format."""

    name = "torchvision ImageNet ResNet"
    priority = 10
    strict = False
    matching_heuristics = True

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        sd = tensor_items(strip_prefix(checkpoint.get("model", checkpoint), "module."))
        if sd is None or "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
            return False
        return all(_RESNET_KEY.match(k) for k in sd)

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        sd = strip_prefix(checkpoint.get("model", checkpoint), "module.")
        return {"model": convert_torchvision_to_d2(sd), "__author__": "torchvision"}
