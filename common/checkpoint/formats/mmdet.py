"""mmdetection v2 checkpoints of dense detectors (VarifocalNet, ATSS): ``{'meta', 'state_dict'[,
'optimizer']}`` as mmcv's ``save_checkpoint`` writes them (e.g. ``vfnet_r50_1x_41.6.pth``,
``vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth``, ``atss_r50_fpn_1x_coco_20200209-985f7bd0.pth``).

Renaming (strict: the whole detector must be covered):

* backbone (torchvision-style ResNet ``style='pytorch'``): ``backbone.conv1`` / ``bn1`` /
  ``layerN.i.{convK,bnK,downsample}`` -> ``backbone.bottom_up.{stem.conv1[.norm], res{N+1}.i.convK[.norm],
  shortcut[.norm]}``; DCNv2 offsets ``layerN.i.conv2.conv_offset`` -> ``res{N+1}.i.conv2_offset``;
  ``num_batches_tracked`` dropped when the model has FrozenBN;
* neck: ``neck.lateral_convs.i.conv`` -> ``backbone.fpn_lateral{i+3}``, ``neck.fpn_convs.i.conv`` ->
  ``backbone.fpn_output{i+3}`` for the laterals' outputs, then ``backbone.top_block.p6`` / ``p7``
  (``start_level=1``: the first lateral is on C3);
* head ``bbox_head.`` -> ``head.``: ``{cls,reg}_convs.i.conv`` -> ``{cls,bbox}_subnet.{3i}``
  (with its ``conv_offset`` when deformable), ``.gn`` -> ``.{3i+1}``; VFNet ``vfnet_reg_conv`` ->
  ``reg_conv.{0,1}``, ``vfnet_reg`` -> ``bbox_pred``, ``vfnet_reg_refine_dconv`` ->
  ``reg_refine_dconv``, ``vfnet_reg_refine`` -> ``bbox_pred_refine``, ``vfnet_cls_dconv`` ->
  ``cls_dconv``, ``vfnet_cls`` -> ``cls_score``; ATSS ``atss_cls`` / ``atss_reg`` /
  ``atss_centerness`` -> ``cls_score`` / ``bbox_pred`` / ``centerness``; mmcv's 0-d
  ``scales.l.scale`` / ``scales_refine.l.scale`` -> shape ``(1,)``.

The weights expect RGB input with ImageNet statistics (``INPUT.FORMAT RGB``, ``PIXEL_MEAN
[123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]``) and the stride in the 3x3 conv
(``RESNETS.STRIDE_IN_1X1 False``), as the project's ``atss.*`` / ``vfnet.*`` configs set.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Mapping

import torch

from ..torchvision_conversion import convert_torchvision_to_d2
from . import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat, strip_prefix, tensor_items

__all__ = ["MMDetDenseFormat", "rename_mmdet_key"]

logger = logging.getLogger(__name__)

INPUT_CONVENTION = ("INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], "
                    "MODEL.PIXEL_STD [58.395, 57.12, 57.375], MODEL.RESNETS.STRIDE_IN_1X1 False")

_HEAD_RULES = [
    (re.compile(r"^(cls|reg)_convs\.(\d+)\.conv\."),
     lambda m: "{}_subnet.{}.".format("cls" if m.group(1) == "cls" else "bbox", 3 * int(m.group(2)))),
    (re.compile(r"^(cls|reg)_convs\.(\d+)\.gn\."),
     lambda m: "{}_subnet.{}.".format("cls" if m.group(1) == "cls" else "bbox", 3 * int(m.group(2)) + 1)),
    (re.compile(r"^vfnet_reg_conv\.conv\."), "reg_conv.0."),
    (re.compile(r"^vfnet_reg_conv\.gn\."), "reg_conv.1."),
    (re.compile(r"^vfnet_reg_refine_dconv\."), "reg_refine_dconv."),
    (re.compile(r"^vfnet_reg_refine\."), "bbox_pred_refine."),
    (re.compile(r"^vfnet_reg\."), "bbox_pred."),
    (re.compile(r"^vfnet_cls_dconv\."), "cls_dconv."),
    (re.compile(r"^vfnet_cls\."), "cls_score."),
    (re.compile(r"^atss_cls\."), "cls_score."),
    (re.compile(r"^atss_reg\."), "bbox_pred."),
    (re.compile(r"^atss_centerness\."), "centerness."),
]
_SCALE = re.compile(r"^head\.scales(_refine)?\.\d+\.scale$")


def rename_mmdet_key(key: str, num_laterals: int = 3) -> str:
    """One mmdet key -> ours (see module docstring); unknown keys are returned unchanged (and then
    reported by the strict load)."""
    if key.startswith("backbone."):
        new = next(iter(convert_torchvision_to_d2({key[len("backbone."):]: None})))
        return "backbone.bottom_up." + new.replace(".conv2.conv_offset.", ".conv2_offset.")
    m = re.match(r"^neck\.lateral_convs\.(\d+)\.conv\.(.*)$", key)
    if m:
        return "backbone.fpn_lateral{}.{}".format(int(m.group(1)) + 3, m.group(2))
    m = re.match(r"^neck\.fpn_convs\.(\d+)\.conv\.(.*)$", key)
    if m:
        i = int(m.group(1))
        if i < num_laterals:
            return "backbone.fpn_output{}.{}".format(i + 3, m.group(2))
        return "backbone.top_block.p{}.{}".format(i - num_laterals + 6, m.group(2))
    if key.startswith("bbox_head."):
        rest = key[len("bbox_head."):]
        for pattern, repl in _HEAD_RULES:
            if pattern.match(rest):
                rest = pattern.sub(repl, rest, count=1)
                break
        return "head." + rest
    return key


def _state_dict(checkpoint: Mapping[str, Any]):
    return tensor_items(strip_prefix(checkpoint.get("state_dict", checkpoint), "module."))


@CHECKPOINT_FORMAT_REGISTRY.register()
class MMDetDenseFormat(CheckpointFormat):
    """An mmdetection single-stage detector on a torchvision-style ResNet + FPN (``backbone.conv1``,
    ``neck.lateral_convs``, ``bbox_head``), in mmcv's ``{'meta', 'state_dict'}`` container or bare."""

    name = "mmdetection {'meta', 'state_dict'} (ResNet-FPN + bbox_head: VFNet / ATSS)"
    priority = 50
    strict = True

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        sd = _state_dict(checkpoint)
        if sd is None or "backbone.conv1.weight" not in sd:
            return False
        return any(k.startswith("neck.lateral_convs.") for k in sd) and any(k.startswith("bbox_head.") for k in sd)

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        sd = _state_dict(checkpoint) or {}
        num_laterals = len({k.split(".")[2] for k in sd if k.startswith("neck.lateral_convs.")})
        out: Dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            new = rename_mmdet_key(key, num_laterals)
            if key.endswith("num_batches_tracked") and new not in model_state:
                continue  # FrozenBN has no counter
            if _SCALE.match(new) and value.dim() == 0:
                value = value.reshape(1)  # mmcv Scale is 0-d, ours (1,) as FCOS / AdelaiDet
            out[new] = value
        head = "VFNet" if any(k.startswith("bbox_head.vfnet_") for k in sd) else (
            "ATSS" if any(k.startswith("bbox_head.atss_") for k in sd) else "unknown head")
        meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), Mapping) else {}
        logger.info("mmdetection checkpoint: %s head, %d tensors renamed (mmdet %s, epoch %s); the weights expect %s.",
                    head, len(out), meta.get("mmdet_version", "?"), meta.get("epoch", "?"), INPUT_CONVENTION)
        return {"model": out, "__author__": "mmdetection"}
