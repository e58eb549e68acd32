"""xingyizhou/CenterNet ("Objects as Points") released models, renamed to our CenterNet keys.

The authors' ``src/lib/models/model.py`` ``save_model`` writes ``{"epoch": int, "state_dict":
<model state dict>}`` (keys ``module.``-prefixed when saved from their ``DataParallel``; the
released ``ctdet_coco_*.pth`` files are in torch's legacy, non-zip serialisation); bare state
dicts of the same models also circulate. Their module names (``src/lib/models/networks/``):

* heads (every network): ``hm``/``wh``/``reg``; ResNet and DLA: ``<head>.0`` 3x3 conv and
  ``<head>.2`` 1x1 conv; Hourglass (``large_hourglass.py``, one head per stack):
  ``<head>.<stack>.0.conv`` 3x3 conv and ``<head>.<stack>.1`` 1x1 conv.
* ResNet (``msra_resnet.py`` / ``resnet_dcn.py``): the torchvision body (``conv1``, ``bn1``,
  ``layer1..4``) and ``deconv_layers`` (an ``nn.Sequential``): per up-sampling stage
  ``[ConvTranspose, BN, ReLU]`` (plain) or ``[DCN, BN, ReLU, ConvTranspose, BN, ReLU]`` (DCN).
* DLA-34 (``pose_dla_dcn.py``): ``base`` (the DLA classifier, its ImageNet ``base.fc`` unused by
  detection), ``dla_up``, ``ida_up``; names equal ours under ``backbone.``.
* Hourglass-104: ``pre``, ``kps``, ``cnvs``, ``inters``, ``inters_``, ``cnvs_``; names equal
  ours under ``backbone.``.
* DCNv2 (``DCNv2/dcn_v2.py`` ``DCN``): the module's own ``weight``/``bias`` and its offset/mask
  predictor ``conv_offset_mask`` (27 channels: offsets ``[0, 18)`` in the (dy, dx) per-tap layout
  that ``torchvision.ops.deform_conv2d`` uses, mask logits ``[18, 27)``) -> our
  ``ModulatedDeformConvPack`` ``dcn.weight``/``dcn.bias`` and ``conv_offset`` (no reordering).

Strict: after renaming every key of the model must be present (``num_batches_tracked`` aside),
so a file of another network raises instead of loading partly.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Mapping

import torch

from ..torchvision_conversion import convert_torchvision_to_d2
from . import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat, strip_prefix, tensor_items

__all__ = ["CenterNetFormat", "convert_centernet_state_dict"]

logger = logging.getLogger(__name__)

_HEADS = ("hm", "wh", "reg")
_RESNET_BODY = re.compile(r"^(conv1|bn1|layer[1-4])\.")
_HOURGLASS = ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_")
_DLA = ("base", "dla_up", "ida_up")


def _state_dict(checkpoint: Mapping[str, Any]):
    """The authors' state dict inside ``checkpoint`` (``{"epoch", "state_dict"}`` or bare),
    ``module.`` stripped; None when ``checkpoint`` is neither."""
    inner = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    sd = tensor_items(inner)
    return None if sd is None else strip_prefix(sd, "module.")


def _is_centernet(sd: Mapping[str, torch.Tensor]) -> bool:
    tops = {k.split(".", 1)[0] for k in sd}
    if not {"hm", "wh"} <= tops:
        return False
    known = set(_HEADS) | {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "deconv_layers"}
    known |= set(_HOURGLASS) | set(_DLA)
    if not tops <= known:
        return False
    return ("deconv_layers" in tops and "layer1" in tops) or "base" in tops or {"pre", "kps"} <= tops


def _rename_dcn(keys: Mapping[str, Any]) -> Dict[str, Any]:
    """DCNv2 ``P.weight``/``P.bias``/``P.conv_offset_mask.*`` -> ``P.dcn.*``/``P.conv_offset.*``."""
    dcn_prefixes = {k[: -len(".conv_offset_mask.weight")] for k in keys if k.endswith(".conv_offset_mask.weight")}
    out: Dict[str, Any] = {}
    for k, v in keys.items():
        parent, _, leaf = k.rpartition(".")
        if parent in dcn_prefixes and leaf in ("weight", "bias"):
            k = f"{parent}.dcn.{leaf}"
        elif ".conv_offset_mask." in k:
            k = k.replace(".conv_offset_mask.", ".conv_offset.")
        out[k] = v
    return out


def _rename_deconv(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """``deconv_layers.<i>.*`` -> ``backbone.deconv.<stage>.{dcn,dcn_bn,up_sample,up_bn}.*``."""
    deformable = any(".conv_offset_mask." in k for k in sd)
    names = ("dcn", "dcn_bn", None, "up_sample", "up_bn", None) if deformable else ("up_sample", "up_bn", None)
    out: Dict[str, Any] = {}
    for k, v in sd.items():
        _, idx, rest = k.split(".", 2)
        stage, pos = divmod(int(idx), len(names))
        if names[pos] is None:
            raise ValueError(f"CenterNet checkpoint: unexpected parameter {k!r} on a ReLU of deconv_layers")
        out[f"deconv.{stage}.{names[pos]}.{rest}"] = v
    return _rename_dcn(out)


def _rename_head(k: str, hourglass: bool) -> str:
    head, rest = k.split(".", 1)
    if not hourglass:  # hm.0.weight -> heads.0.hm.0.weight
        return f"heads.0.{head}.{rest}"
    stack, layer, leaf = rest.split(".", 2)  # hm.<s>.0.conv.weight / hm.<s>.1.weight
    if layer == "0":
        leaf = leaf[len("conv."):] if leaf.startswith("conv.") else leaf
        return f"heads.{stack}.{head}.0.{leaf}"
    return f"heads.{stack}.{head}.2.{leaf}"


def convert_centernet_state_dict(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """Rename one of the authors' state dicts (``module.`` already stripped) to our keys.

    Args:
        sd: ``{name: tensor}`` of a ``res_*``, ``resdcn_*``, ``dla_34`` or ``hourglass`` CenterNet.

    Returns:
        ``{our name: tensor}`` for :class:`projects.CenterNet.centernet.CenterNet` (``backbone.*``,
        ``heads.<stack>.{hm,wh,reg}.{0,2}.*``); DLA's ImageNet classifier ``base.fc.*`` is dropped.
    """
    tops = {k.split(".", 1)[0] for k in sd}
    hourglass = "kps" in tops
    body = {k: v for k, v in sd.items() if _RESNET_BODY.match(k)}
    deconv = {k: v for k, v in sd.items() if k.startswith("deconv_layers.")}
    out: Dict[str, Any] = {}
    out.update({"backbone.body." + k: v for k, v in convert_torchvision_to_d2(body).items()})
    out.update({"backbone." + k: v for k, v in _rename_deconv(deconv).items()})
    dropped = []
    rest: Dict[str, Any] = {}
    for k, v in sd.items():
        top = k.split(".", 1)[0]
        if k in body or k in deconv:
            continue
        if top in _HEADS:
            out[_rename_head(k, hourglass)] = v
        elif k.startswith("base.fc."):
            dropped.append(k)
        else:
            rest["backbone." + k] = v
    out.update(_rename_dcn(rest))
    if dropped:
        logger.info("CenterNet checkpoint: dropped the DLA ImageNet classifier %s (unused by detection).",
                    ", ".join(sorted(dropped)))
    return out


@CHECKPOINT_FORMAT_REGISTRY.register()
class CenterNetFormat(CheckpointFormat):
    """xingyizhou/CenterNet ``ctdet`` models: ``{"epoch", "state_dict"}`` or a bare state dict,
    optionally ``module.``-prefixed, with ``hm``/``wh`` heads and a ResNet (``deconv_layers``),
    DLA (``base``) or Hourglass (``pre``/``kps``) body. See the module docstring."""

    name = "xingyizhou/CenterNet ctdet checkpoint"
    priority = 50  # above the torchvision ResNet format: their ResNet models hold a torchvision body
    strict = True

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        if "model" in checkpoint:  # detectron2-style files are never this layout
            return False
        sd = _state_dict(checkpoint)
        return sd is not None and _is_centernet(sd)

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        out: Dict[str, Any] = {"model": convert_centernet_state_dict(_state_dict(checkpoint))}
        if "epoch" in checkpoint and "state_dict" in checkpoint:
            out["epoch"] = int(checkpoint["epoch"])
        return out
