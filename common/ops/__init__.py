"""Ops the papers' authors shipped as compiled CUDA extensions, here on torchvision (CPU + GPU).

detectron2 and the Sparse R-CNN / OneNet forks compile ``detectron2._C`` for deformable convolution
and ROIAlign; both now exist in torchvision with the same semantics, so this package simply
re-exports the modules (defined in :mod:`common.layers`) and the functional ops. Soft-NMS (Cython
``external/nms.pyx`` in the keypoint detectors' repositories, no torchvision op) is
:mod:`common.ops.soft_nms`.
"""
from torchvision.ops import deform_conv2d, roi_align

from common.layers.deform_conv import DeformConv, ModulatedDeformConv
from common.layers.roi_align import ROIAlign

from .soft_nms import soft_nms, soft_nms_merge
from .corner_pool import CascadeCornerPool, CenterPool, CornerPool, bottom_pool, column_max_pool, left_pool, right_pool, row_max_pool, top_pool  # noqa: F401

__all__ = ["DeformConv", "ModulatedDeformConv", "ROIAlign", "deform_conv2d", "roi_align", "soft_nms", "soft_nms_merge"]
