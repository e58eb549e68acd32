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
from .head import CornerHeads
from .targets import build_corner_targets

__all__ = [
    "add_cornernet_config",
    "CornerNet",
    "CenterNetTriplets",
    "CornerNetSaccade",
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
