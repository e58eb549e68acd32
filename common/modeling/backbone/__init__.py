"""Backbones: registry, ``Backbone`` interface, ResNet and FPN (detectron2 ``modeling/backbone``)."""
from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .dla import DLASeg, add_dla_config, build_dla_backbone  # noqa: F401
from .hourglass import StackedHourglass, add_hourglass_config, build_hourglass_backbone  # noqa: F401
from .hourglass_squeeze import FireModule, build_squeeze_hourglass_backbone, squeeze_hourglass  # noqa: F401
from .resnet_deconv import ResNetDeconv, add_resnet_deconv_config, build_resnet_deconv_backbone  # noqa: F401
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7, build_resnet_fpn_backbone, build_retinanet_resnet_fpn_backbone
from .resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    ResNetBlockBase,
    build_resnet_backbone,
    make_stage,
)

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNet",
    "ResNetBlockBase",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
    "make_stage",
]
