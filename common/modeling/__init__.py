"""Models: registries, builders, backbones, RoI pooling and post-processing (detectron2 ``modeling``)."""
from common.layers import ShapeSpec

from .backbone import (
    BACKBONE_REGISTRY,
    FPN,
    Backbone,
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNet,
    ResNetBlockBase,
    build_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
    make_stage,
)
from .box_regression import Box2BoxTransform, Box2BoxTransformLinear  # noqa: F401
from .anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator, build_anchor_generator  # noqa: F401
from .backbone import (  # noqa: F401
    DLASeg, ResNetDeconv, StackedHourglass, add_dla_config, add_hourglass_config, add_resnet_deconv_config,
    build_dla_backbone, build_hourglass_backbone, build_resnet_deconv_backbone,
)
from .meta_arch import META_ARCH_REGISTRY, build_model
from .poolers import ROIPooler
from .postprocessing import detector_postprocess
from .preprocessing import normalize_and_pad, register_pixel_stats

__all__ = [
    "BACKBONE_REGISTRY",
    "META_ARCH_REGISTRY",
    "FPN",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ROIPooler",
    "ResNet",
    "ResNetBlockBase",
    "ShapeSpec",
    "build_backbone",
    "build_model",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "detector_postprocess",
    "register_pixel_stats",
    "make_stage",
]
