"""Name conversion and suffix matching for loading foreign weights into detectron2-style models.

Same rules as detectron2 v0.6 ``detectron2/checkpoint/c2_model_loading.py``: Caffe2/Detectron
(MSRA) blob names are renamed to detectron2 names, then every model key is matched to the longest
checkpoint key that equals it or is a dot-aligned suffix of it (``res2.0.conv1.weight`` feeds
``backbone.bottom_up.res2.0.conv1.weight``).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch
from tabulate import tabulate

__all__ = ["convert_basic_c2_names", "convert_c2_detectron_names", "align_and_update_state_dicts"]

logger = logging.getLogger(__name__)

# (pattern, replacement) pairs applied in order to every blob name; order matters because later
# rules see the output of earlier ones (e.g. "_" -> "." happens before the ".w"/".b" suffix rules).
_BASIC_RULES: List[Tuple[str, str]] = [
    (r"\.b$", ".bias"),
    (r"\.w$", ".weight"),
    # batch/group norm statistics and affine parameters -> "norm.*"
    (r"bn\.s$", "norm.weight"),
    (r"bn\.bias$", "norm.bias"),
    (r"bn\.rm", "norm.running_mean"),
    (r"bn\.running\.mean$", "norm.running_mean"),
    (r"bn\.riv$", "norm.running_var"),
    (r"bn\.running\.var$", "norm.running_var"),
    (r"bn\.gamma$", "norm.weight"),
    (r"bn\.beta$", "norm.bias"),
    (r"gn\.s$", "norm.weight"),
    (r"gn\.bias$", "norm.bias"),
    # stem: "res_conv1_bn_*" is the stem norm; "conv1_w" the stem conv
    (r"^res\.conv1\.norm\.", "conv1.norm."),
    (r"^conv1\.", "stem.conv1."),
    # residual blocks
    (r"\.branch1\.", ".shortcut."),
    (r"\.branch2a\.", ".conv1."),
    (r"\.branch2b\.", ".conv2."),
    (r"\.branch2c\.", ".conv3."),
]
_BASIC_RULES_COMPILED = [(re.compile(p), r) for p, r in _BASIC_RULES]


def convert_basic_c2_names(original_keys: List[str]) -> List[str]:
    """Rename Caffe2 ResNet blob names to detectron2 names (same order as the input).

    Examples: ``conv1_w`` -> ``stem.conv1.weight``; ``res_conv1_bn_s`` -> ``stem.conv1.norm.weight``;
    ``res2_0_branch2a_bn_riv`` -> ``res2.0.conv1.norm.running_var``; ``res3_0_branch1_w`` ->
    ``res3.0.shortcut.weight``; ``pred_b`` -> ``linear.bias``.
    """
    layer_keys = [{"pred_b": "linear_b", "pred_w": "linear_w"}.get(k, k) for k in original_keys]
    layer_keys = [k.replace("_", ".") for k in layer_keys]
    for pattern, repl in _BASIC_RULES_COMPILED:
        layer_keys = [pattern.sub(repl, k) for k in layer_keys]
    return layer_keys


def _fpn_name(name: str) -> str:
    # "fpn.inner.res2.2.sum.lateral.weight" -> "fpn_lateral2.weight";
    # "fpn.res2.2.sum.weight" -> "fpn_output2.weight" (".norm" kept when present).
    splits = name.split(".")
    norm = ".norm" if "norm" in splits else ""
    if name.startswith("fpn.inner."):
        return "fpn_lateral{}{}.{}".format(int(splits[2][len("res") :]), norm, splits[-1])
    if name.startswith("fpn.res"):
        return "fpn_output{}{}.{}".format(int(splits[1][len("res") :]), norm, splits[-1])
    return name


def convert_c2_detectron_names(weights: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Rename a Caffe2/Detectron state dict (backbone + FPN rules).

    Returns:
        (renamed dict, ``{new name: original name}``).

    Raises:
        ValueError: if two blobs map to the same new name.

    Detection-head renames of detectron2 (RPN, box/mask/keypoint heads, background-class
    reordering) are not applied: no project here loads Detectron1 detection models.
    """
    logger.info("Renaming Caffe2 weights ......")
    original_keys = sorted(weights.keys())
    layer_keys = [_fpn_name(k) for k in convert_basic_c2_names(original_keys)]
    if len(set(layer_keys)) != len(layer_keys):
        raise ValueError("Caffe2 name conversion produced duplicate keys: {}".format(
            sorted({k for k in layer_keys if layer_keys.count(k) > 1})))
    new_weights = {new: weights[orig] for orig, new in zip(original_keys, layer_keys)}
    new_keys_to_original_keys = dict(zip(layer_keys, original_keys))
    return new_weights, new_keys_to_original_keys


def _suffixes(key: str) -> List[str]:
    # "a.b.c" -> ["a.b.c", "b.c", "c"]: the candidate checkpoint keys, longest first.
    parts = key.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, torch.Tensor],
    ckpt_state_dict: Mapping[str, Any],
    c2_conversion: bool = False,
) -> Dict[str, Any]:
    """Match checkpoint keys to model keys by the longest dot-aligned suffix.

    For each model key, the checkpoint key that equals it or is a dot-aligned suffix of it
    (``model_key.endswith("." + ckpt_key)``) is chosen, preferring the longest. Matches whose
    shapes differ are skipped with a warning (the model keeps its initialisation).

    Args:
        model_state_dict: the model's ``state_dict()`` (only keys and shapes are read).
        ckpt_state_dict: ``{name: tensor}`` from the checkpoint.
        c2_conversion: first rename Caffe2/MSRA blob names (:func:`convert_c2_detectron_names`).

    Returns:
        a new dict: matched values under model names, plus every unmatched checkpoint entry under
        its original name (so the loader reports it as unexpected).

    Raises:
        ValueError: if one checkpoint key would feed two model keys (ambiguous match).
    """
    if c2_conversion:
        ckpt_state_dict, original_keys = convert_c2_detectron_names(ckpt_state_dict)
    else:
        original_keys = {k: k for k in ckpt_state_dict.keys()}
    ckpt_keys = set(ckpt_state_dict.keys())

    result: Dict[str, Any] = {}
    matched: Dict[str, str] = {}  # ckpt key -> model key
    rows = []
    for key_model in sorted(model_state_dict.keys()):
        key_ckpt = next((s for s in _suffixes(key_model) if s in ckpt_keys), None)
        if key_ckpt is None:
            continue
        value = ckpt_state_dict[key_ckpt]
        shape_model = tuple(model_state_dict[key_model].shape)
        shape_ckpt = tuple(value.shape)
        if shape_model != shape_ckpt:
            logger.warning(
                "Shape of {} in checkpoint is {}, while shape of {} in model is {}. "
                "{} will not be loaded. Please double check and see if this is desired.".format(
                    key_ckpt, shape_ckpt, key_model, shape_model, key_ckpt
                )
            )
            continue
        if key_ckpt in matched:
            raise ValueError(
                "Ambiguity found for {} in checkpoint! It matches at least two keys in the model "
                "({} and {}). Cannot match one checkpoint key to multiple keys in the model.".format(
                    key_ckpt, matched[key_ckpt], key_model
                )
            )
        matched[key_ckpt] = key_model
        result[key_model] = value
        rows.append((key_model, original_keys[key_ckpt], shape_ckpt))

    logger.info(
        "Matched {} of {} model keys with {} checkpoint keys by name suffix.".format(
            len(matched), len(model_state_dict), len(ckpt_keys)
        )
    )
    if rows:
        logger.debug(
            "Matched keys:\n"
            + tabulate(rows, headers=["Names in Model", "Names in Checkpoint", "Shapes"], tablefmt="pipe")
        )
    for k in sorted(ckpt_keys - set(matched)):
        result[original_keys[k]] = ckpt_state_dict[k]
    return result
