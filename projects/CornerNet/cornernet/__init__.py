"""CornerNet (Law & Deng 2018), CornerNet-Squeeze (Law et al. 2019) and CenterNet: Keypoint
Triplets (Duan et al. 2019) on the ``common`` runtime.

Importing the package registers ``CornerNet``, ``CenterNetTriplets`` and ``CornerNetSaccade`` in
``META_ARCH_REGISTRY``;
the backbones (``build_hourglass_backbone``, ``build_squeeze_hourglass_backbone``) live in
``common.modeling.backbone``, the pools in ``common.ops``, the authors' checkpoint layouts in
``common.checkpoint.formats.cornernet``.
"""
from .config import add_cornernet_config
from .dataset_mapper import CornerNetDatasetMapper, build_cornernet_augmentation
from .decode import central_region_rescore, cornernet_decode, heatmap_peaks, topk_keypoints
from .detector import CenterNetTriplets, CornerNet
from .saccade import attention_locations, attention_targets, crop_and_resize, location_nms, reference_locations
from .saccade_detector import CornerNetSaccade
from .saccade_mapper import CornerNetSaccadeDatasetMapper


# The training mapper of each meta-architecture (the authors' sampling function of its config).
TRAIN_MAPPERS = {"CornerNet": CornerNetDatasetMapper, "CenterNetTriplets": CornerNetDatasetMapper,
                 "CornerNetSaccade": CornerNetSaccadeDatasetMapper}


def build_cornernet_train_mapper(cfg):
    """The training dataset mapper of ``cfg.MODEL.META_ARCHITECTURE`` (:data:`TRAIN_MAPPERS`;
    CornerNet's for meta-architectures not listed)."""
    return TRAIN_MAPPERS.get(cfg.MODEL.META_ARCHITECTURE, CornerNetDatasetMapper)(cfg, is_train=True)

from .head import CornerHeads
from .targets import build_corner_targets

__all__ = [
    "add_cornernet_config",
    "CornerNet",
    "CenterNetTriplets",
    "CornerNetSaccade",
    "CornerNetSaccadeDatasetMapper",
    "TRAIN_MAPPERS",
    "build_cornernet_train_mapper",
    "attention_locations",
    "attention_targets",
    "crop_and_resize",
    "location_nms",
    "reference_locations",
    "CornerHeads",
    "CornerNetDatasetMapper",
    "build_cornernet_augmentation",
    "build_corner_targets",
    "central_region_rescore",
    "cornernet_decode",
    "heatmap_peaks",
    "topk_keypoints",
]
