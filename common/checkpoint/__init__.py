"""Checkpoint loading/saving with detectron2's formats (``detectron2/checkpoint``)."""
from fvcore.common.checkpoint import Checkpointer, PeriodicCheckpointer

from .c2_model_loading import align_and_update_state_dicts, convert_basic_c2_names, convert_c2_detectron_names
from .detection_checkpoint import UNSAFE_LOAD_ENV, DetectionCheckpointer, read_checkpoint_metadata
from .safe_pickle import load_weights_pickle
from .torchvision_conversion import convert_torchvision_to_d2, is_torchvision_resnet_state_dict

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "DetectionCheckpointer",
    "UNSAFE_LOAD_ENV",
    "align_and_update_state_dicts",
    "convert_basic_c2_names",
    "convert_c2_detectron_names",
    "convert_torchvision_to_d2",
    "is_torchvision_resnet_state_dict",
    "load_weights_pickle",
    "read_checkpoint_metadata",
]
