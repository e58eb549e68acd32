"""CenterNet, "Objects as Points" (Zhou, Wang, Krähenbühl 2019) on the ``common`` runtime.

Importing the package registers ``CenterNet`` in ``META_ARCH_REGISTRY``; the backbones
(``build_resnet_deconv_backbone``, ``build_dla_backbone``, ``build_hourglass_backbone``) live in
``common.modeling.backbone`` so that CornerNet reuses them.
"""
from .config import add_centernet_config
from .dataset_mapper import CenterNetDatasetMapper, build_centernet_augmentation
from .decode import centernet_decode, heatmap_peaks
from .detector import CenterNet
from .head import CenterNetHead

__all__ = [
    "add_centernet_config",
    "CenterNet",
    "CenterNetDatasetMapper",
    "CenterNetHead",
    "build_centernet_augmentation",
    "centernet_decode",
    "heatmap_peaks",
]
