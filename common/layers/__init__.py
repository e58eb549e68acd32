"""Neural-network building blocks (detectron2 ``layers``), built on torch / torchvision ops."""
from .batch_norm import FrozenBatchNorm2d, get_norm
from .blocks import CNNBlockBase
from .deform_conv import DeformConv, ModulatedDeformConv
from .nms import batched_nms
from .roi_align import ROIAlign
from .shape_spec import ShapeSpec
from .wrappers import BatchNorm2d, Conv2d, ConvTranspose2d, Linear, cat, interpolate, nonzero_tuple

__all__ = [
    "BatchNorm2d",
    "CNNBlockBase",
    "Conv2d",
    "ConvTranspose2d",
    "DeformConv",
    "FrozenBatchNorm2d",
    "Linear",
    "ModulatedDeformConv",
    "ROIAlign",
    "ShapeSpec",
    "batched_nms",
    "cat",
    "get_norm",
    "interpolate",
    "nonzero_tuple",
]
