"""Released models of princeton-vl/CornerNet, princeton-vl/CornerNet-Lite and Duankaiwen/CenterNet
(Keypoint Triplets), renamed to the keys of ``projects/CornerNet`` (``CornerNet``,
``CenterNetTriplets``).

The authors' ``nnet/py_factory.py`` ``save_params`` writes ``torch.save(self.model.state_dict())``
of a wrapper whose only child is ``module``: a **bare** state dict, every key ``module.``-prefixed,
no epoch/optimizer, float32 tensors, in torch's **legacy** (non-zip) serialisation (torch
0.4.0-1.0), under a ``.pkl`` name (``CornerNet_500000.pkl``, ``CornerNet_Squeeze_500000.pkl``,
``CenterNet-52_480000.pkl``, ``CenterNet-104_480000.pkl``). ``num_batches_tracked`` is absent
from the files trained under torch 0.4.0 (CornerNet) and present in the others; both load.

Two key layouts:

* CornerNet / CenterNet-Triplets: ``module.{pre,kps,cnvs,inters,inters_,cnvs_}.*`` (the
  hourglass), ``module.{tl,br,ct}_cnvs`` (corner / cascade / centre pooling), ``*_heats``,
  ``*_tags``, ``*_regrs``.
* CornerNet-Lite (CornerNet ported, CornerNet-Squeeze): ``module.hg.{pre,hgs,cnvs,inters,inters_,
  cnvs_}.*``, ``module.{tl,br}_modules``, ``*_heats``, ``*_tags``, ``*_offs``.

* CornerNet-Saccade (``CornerNet_Saccade_500000.pkl``): the CornerNet-Lite layout of a 3-stack
  Hourglass-54 plus ``module.att_modules.<stack>.<map>.*`` (the attention heads).

Ours: ``backbone.{pre,kps,cnvs,inters,inters_,cnvs_}.*``, ``heads.{tl,br,ct}_{pools,heats,tags,offs}``
and ``attention_heads`` (``CornerNetSaccade``); everything below those prefixes is identical (the
same block and parameter names). Strict: after renaming every key must fit.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

import torch

from . import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat, strip_prefix, tensor_items

__all__ = ["CornerNetFormat", "convert_cornernet_state_dict", "is_torch_save_file"]

logger = logging.getLogger(__name__)

_BACKBONE = ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_")
# their top-level module -> ours
_HEADS = {
    "tl_cnvs": "heads.tl_pools", "br_cnvs": "heads.br_pools", "ct_cnvs": "heads.ct_pools",
    "tl_modules": "heads.tl_pools", "br_modules": "heads.br_pools",
    "tl_heats": "heads.tl_heats", "br_heats": "heads.br_heats", "ct_heats": "heads.ct_heats",
    "tl_tags": "heads.tl_tags", "br_tags": "heads.br_tags",
    "tl_regrs": "heads.tl_offs", "br_regrs": "heads.br_offs", "ct_regrs": "heads.ct_offs",
    "tl_offs": "heads.tl_offs", "br_offs": "heads.br_offs",
    "att_modules": "attention_heads",
}
_LEGACY_MAGIC = bytes.fromhex("6cfc9c46f9206aa85019")  # torch's legacy magic number, little-endian


def is_torch_save_file(f) -> bool:
    """Whether the open binary file ``f`` holds a ``torch.save`` file (zip, or the legacy pickle
    whose first record is torch's magic number) rather than a plain pickle (detectron2 / Caffe2
    ``.pkl``). The authors of CornerNet name their ``torch.save`` files ``.pkl``. ``f`` is rewound."""
    pos = f.tell()
    head = f.read(16)
    f.seek(pos)
    return head[:4] == b"PK\x03\x04" or (head[:2] == b"\x80\x02" and _LEGACY_MAGIC in head)


def _state_dict(checkpoint: Mapping[str, Any]) -> Optional[Dict[str, torch.Tensor]]:
    sd = tensor_items(checkpoint)
    if sd is None or not all(k.startswith("module.") for k in sd):
        return None
    return strip_prefix(sd, "module.")


def _layout(sd: Mapping[str, Any]) -> Optional[str]:
    tops = {k.split(".", 1)[0] for k in sd}
    if "tl_heats" not in tops or "br_heats" not in tops:
        return None
    if "hg" in tops and tops <= set(_HEADS) | {"hg"}:
        return "CornerNet-Lite (CornerNet-Saccade)" if "att_modules" in tops else "CornerNet-Lite"
    if "kps" in tops and tops <= set(_HEADS) | set(_BACKBONE):
        return "CenterNet-Triplets" if "ct_heats" in tops else "CornerNet"
    return None


def convert_cornernet_state_dict(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """Rename one of the authors' state dicts (``module.`` already stripped) to our keys.

    Raises:
        ValueError: a key of neither layout.
    """
    out: Dict[str, Any] = {}
    for k, v in sd.items():
        top, rest = k.split(".", 1)
        if top == "hg":
            sub, tail = rest.split(".", 1)
            out["backbone." + ("kps" if sub == "hgs" else sub) + "." + tail] = v
        elif top in _BACKBONE:
            out["backbone." + k] = v
        elif top in _HEADS:
            out[_HEADS[top] + "." + rest] = v
        else:
            raise ValueError(f"CornerNet checkpoint: unexpected key 'module.{k}'")
    return out


@CHECKPOINT_FORMAT_REGISTRY.register()
class CornerNetFormat(CheckpointFormat):
    """princeton-vl/CornerNet, CornerNet-Lite and Duankaiwen/CenterNet releases: a bare,
    ``module.``-prefixed state dict with ``tl_heats``/``br_heats`` (see the module docstring)."""

    name = "princeton-vl/CornerNet(-Lite) / Duankaiwen/CenterNet checkpoint"
    priority = 50
    strict = True

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        if "model" in checkpoint:
            return False
        sd = _state_dict(checkpoint)
        return sd is not None and _layout(sd) is not None

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        sd = _state_dict(checkpoint)
        layout = _layout(sd)
        ours = convert_cornernet_state_dict(sd)
        # Files saved under torch 0.4.0 have no num_batches_tracked: start the counters at 0
        # (what BatchNorm.load_state_dict does for such files).
        filled = [k for k, v in model_state.items() if k.endswith("num_batches_tracked") and k not in ours]
        for k in filled:
            ours[k] = torch.zeros_like(model_state[k])
        logger.info("CornerNet checkpoint: %s key layout, %d tensors%s.", layout, len(sd),
                    f", num_batches_tracked absent ({len(filled)} set to 0)" if filled else "")
        return {"model": ours}
