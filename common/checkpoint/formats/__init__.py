"""Recognising the authors' checkpoint containers and renaming them to our keys on load.

One mechanism serves every project: each known layout (detectron2/cvpods ``{"model": ...}``,
torchvision ImageNet ResNets, the CenterNet, CornerNet, mmdetection and maskrcnn-benchmark
releases, ...) is a :class:`CheckpointFormat` registered in ``CHECKPOINT_FORMAT_REGISTRY``.
:func:`recognize_checkpoint` is called by ``DetectionCheckpointer`` with the object
``torch.load`` returned and the model's state dict; the first format (highest ``priority``)
whose :meth:`CheckpointFormat.matches` is true converts it, and the checkpointer logs the
format's name.

A project adds a format by writing a module in this package with::

    @CHECKPOINT_FORMAT_REGISTRY.register()
    class MyAuthorsFormat(CheckpointFormat):
        name = "authors/repo (what the file looks like)"
        priority = 50
        def matches(self, checkpoint, model_state): ...
        def convert(self, checkpoint, model_state): ...

and importing it at the bottom of this file.

``strict`` formats rename a full model: after renaming, any missing or unexpected key is an
error (a half-loaded model must never evaluate silently). Non-strict formats (an ImageNet
backbone) initialise part of the model, and the rest is expected to be missing.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from fvcore.common.registry import Registry

__all__ = [
    "CHECKPOINT_FORMAT_REGISTRY",
    "CheckpointFormat",
    "recognize_checkpoint",
    "strip_prefix",
    "tensor_items",
]

CHECKPOINT_FORMAT_REGISTRY = Registry("CHECKPOINT_FORMAT")
CHECKPOINT_FORMAT_REGISTRY.__doc__ = """
Registry of checkpoint layouts (classes derived from :class:`CheckpointFormat`) recognised by
``DetectionCheckpointer`` when it loads a ``.pth`` file.
"""


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """``state_dict`` with ``prefix`` removed from every key, when every key has it (a model saved
    inside ``DataParallel``/``DistributedDataParallel``); else an unchanged copy."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def tensor_items(obj: Any) -> Optional[Dict[str, Any]]:
    """``obj`` as a ``{str: tensor}`` dict when it is a non-empty mapping of tensors (a state
    dict), else None."""
    if not isinstance(obj, Mapping) or not obj:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    return dict(obj)


class CheckpointFormat:
    """One checkpoint layout: how to recognise it and how to rename it to our keys.

    Attributes:
        name: shown in the log line "Recognised <name> in <file>".
        priority: formats are tried from the highest priority down.
        strict: after renaming, missing/unexpected keys are an error (see module docstring).
        matching_heuristics: let detectron2's suffix matching (``align_and_update_state_dicts``)
            place the renamed keys (used for backbone-only files).
    """

    name: str = ""
    priority: int = 0
    strict: bool = True
    matching_heuristics: bool = False

    def matches(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``checkpoint`` (what ``torch.load`` returned, a dict) is in this layout.

        Args:
            checkpoint: the loaded file.
            model_state: the target model's ``state_dict()`` (keys and shapes to compare with).
        """
        raise NotImplementedError

    def convert(self, checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        """Return ``{"model": <state dict in our names>, **other entries to keep}``.

        Entries other than ``"model"`` (e.g. ``"iteration"``, ``"epoch"``) are returned to the
        caller of ``DetectionCheckpointer.load``; optimizer states of other code bases are dropped.
        """
        raise NotImplementedError


def recognize_checkpoint(
    checkpoint: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]
) -> Optional[Tuple[CheckpointFormat, Dict[str, Any]]]:
    """Find the registered format of ``checkpoint`` and convert it.

    Returns:
        ``(format, converted)`` with ``converted["model"]`` in our key names, or None when no
        registered format matches (the checkpoint is then read as a detectron2 file).
    """
    formats = sorted((cls() for _, cls in CHECKPOINT_FORMAT_REGISTRY), key=lambda f: -f.priority)
    for fmt in formats:
        if fmt.matches(checkpoint, model_state):
            return fmt, fmt.convert(checkpoint, model_state)
    return None


# Registered formats (import order does not matter: ``priority`` decides).
from . import torchvision_resnet  # noqa: E402,F401
from . import centernet  # noqa: E402,F401
from . import maskrcnn_benchmark, mmdet  # noqa: E402,F401
from . import cornernet  # noqa: E402,F401
