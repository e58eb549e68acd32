"""maskrcnn-benchmark checkpoints of the official FCOS (tianzhi0549/FCOS, package ``fcos_core``):
``{'model': {'module.backbone.body...', 'module.backbone.fpn...', 'module.rpn.head...'}[, 'iteration',
'optimizer', 'scheduler']}`` (e.g. ``FCOS_imprv_R_50_FPN_1x.pth``, ``FCOS_R_50_FPN_1x.pth``).

Renamed to AdelaiDet's detectron2 names (= this project's FCOS), the rules of AdelaiDet's
``tools/convert_fcos_weight.py`` in order: strip ``module.``; ``body`` -> ``bottom_up``;
``.layer1..4`` -> ``.res2..5``; ``downsample.0/1`` -> ``shortcut[.norm]``; ``bnK`` -> ``convK.norm``;
``fpn_inner{k}`` / ``fpn_layer{k}`` -> ``fpn_lateral{k+1}`` / ``fpn_output{k+1}`` (maskrcnn-benchmark
numbers the stages from C2 = 1); ``top_blocks`` -> ``top_block``; ``fpn.`` removed; ``rpn`` ->
``proposal_generator``; ``head`` -> ``fcos_head``; plus ``fcos_head.centerness`` -> ``fcos_head.ctrness``
(missing from AdelaiDet's converter, whose non-strict load leaves ``ctrness`` random).

maskrcnn-benchmark's ``FrozenBatchNorm2d`` has no eps (``scale = weight * running_var.rsqrt()``);
detectron2's adds 1e-5, so 1e-5 is subtracted from every ``running_var`` (what detectron2 does for
its own version-2 FrozenBN), which makes the two exactly equal.

The weights expect BGR 0-255 input minus ``[102.9801, 115.9465, 122.7717]``, std 1, stride in the 1x1
conv (``RESNETS.STRIDE_IN_1X1 True``): the project's ``fcos.imprv_*`` / ``fcos.original_*`` configs.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Mapping

import torch

from . import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat, strip_prefix, tensor_items

__all__ = ["MaskRCNNBenchmarkFCOSFormat", "rename_fcos_official_key"]

logger = logging.getLogger(__name__)

INPUT_CONVENTION = ("INPUT.FORMAT BGR, MODEL.PIXEL_MEAN [102.9801, 115.9465, 122.7717], MODEL.PIXEL_STD "
                    "[1, 1, 1], MODEL.RESNETS.STRIDE_IN_1X1 True")
FROZEN_BN_EPS = 1e-5


def rename_fcos_official_key(key: str) -> str:
    """One official-FCOS key (without ``module.``) -> AdelaiDet's name (module docstring)."""
    k = key.replace("body", "bottom_up")
    k = re.sub(r"\.layer([1-4])", lambda m: ".res{}".format(int(m.group(1)) + 1), k)
    k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    k = re.sub(r"\bbn([1-3])\b", r"conv\1.norm", k)
    k = re.sub(r"fpn_inner(\d)", lambda m: "fpn_lateral{}".format(int(m.group(1)) + 1), k)
    k = re.sub(r"fpn_layer(\d)", lambda m: "fpn_output{}".format(int(m.group(1)) + 1), k)
    k = k.replace("top_blocks", "top_block").replace("fpn.", "")
    k = k.replace("rpn", "proposal_generator").replace("head", "fcos_head")
    return k.replace("fcos_head.centerness", "fcos_head.ctrness")


def _state_dict(checkpoint: Mapping[str, Any]):
    return tensor_items(strip_prefix(checkpoint.get("model", checkpoint), "module."))


@CHECKPOINT_FORMAT_REGISTRY.register()
class MaskRCNNBenchmarkFCOSFormat(CheckpointFormat):
    """Official FCOS (maskrcnn-benchmark) detector: ``backbone.body``, ``backbone.fpn``, ``rpn.head``
    keys, ``module.``-prefixed or not."""

    name = "maskrcnn-benchmark FCOS (tianzhi0549/FCOS, module.-prefixed {'model'})"
    priority = 50
    strict = True

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        sd = _state_dict(checkpoint)
        if sd is None:
            return False
        return (any(k.startswith("backbone.body.") for k in sd) and any(k.startswith("backbone.fpn.") for k in sd)
                and any(k.startswith("rpn.head.") for k in sd))

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        sd = _state_dict(checkpoint) or {}
        out: Dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            new = rename_fcos_official_key(key)
            if new.startswith("backbone.bottom_up.") and new.endswith("running_var"):
                value = value - FROZEN_BN_EPS
            out[new] = value
        logger.info("Official FCOS checkpoint: %d tensors renamed to AdelaiDet names, FrozenBN running_var - 1e-5; "
                    "the weights expect %s.", len(out), INPUT_CONVENTION)
        return {"model": out, "__author__": "tianzhi0549/FCOS"}
