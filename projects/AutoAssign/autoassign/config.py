"""Config keys of AutoAssign: ``MODEL.AUTOASSIGN`` with the names and values of the authors'
``MODEL.FCOS`` node (cvpods ``cvpods/configs/fcos_config.py`` defaults overridden by
Megvii-BaseDetection/AutoAssign ``auto_assign.res50.fpn.coco.800size.1x/config.py``), plus the FPN
P6/P7 keys of ``common.modeling.backbone.fpn.add_fpn_top_block_config``.

The node is called ``AUTOASSIGN`` (not ``FCOS`` as in cvpods) so that it cannot collide with the
FCOS project's AdelaiDet keys. ``FPN_STRIDES`` is not a key: the strides are the backbone's.
"""
from __future__ import annotations

from common.config import CfgNode as CN
from common.modeling.backbone.fpn import add_fpn_top_block_config

__all__ = ["add_autoassign_config"]


def add_autoassign_config(cfg: CN) -> None:
    """Add ``MODEL.AUTOASSIGN.*`` and the FPN top-block keys to ``cfg`` in place.

    Keys (authors' values): ``NUM_CLASSES`` 80 (also the rows of ``mu`` / ``sigma``);
    ``IN_FEATURES`` p3..p7; ``NUM_CONVS`` 4 (per tower, 3x3 conv + GN(32) + ReLU); ``NORM`` "GN";
    ``PRIOR_PROB`` 0.02 (classification bias); ``BBOX_PRED_BIAS`` 4.0 (the code's constant
    initial ``bbox_pred`` bias); ``NORM_REG_TARGETS`` True (``ReLU(scale * x) * stride``; False:
    ``exp(scale * x)``); ``SHIFT_OFFSET`` 0.0 (locations at ``(j*s, i*s)``, cvpods
    ``SHIFT_GENERATOR.OFFSET``); ``IOU_LOSS_TYPE`` "giou"; ``REG_WEIGHT`` 5.0 (``P_loc =
    exp(-5 L_GIoU)``); ``FOCAL_LOSS_ALPHA`` 0.25 (positive / negative balance);
    ``FOCAL_LOSS_GAMMA`` 2.0 (negative focal BCE); ``POS_TEMPERATURE`` 1/3 (``exp(C / tau)``; the
    code's ``exp(3 C)``); ``SCORE_THRESH_TEST`` 0.05; ``TOPK_CANDIDATES_TEST`` 1000 (per level);
    ``NMS_THRESH_TEST`` 0.6. Detections per image: ``TEST.DETECTIONS_PER_IMAGE`` (100).
    """
    add_fpn_top_block_config(cfg)
    cfg.MODEL.AUTOASSIGN = CN()
    a = cfg.MODEL.AUTOASSIGN
    a.NUM_CLASSES = 80
    a.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    a.NUM_CONVS = 4
    a.NORM = "GN"
    a.PRIOR_PROB = 0.02
    a.BBOX_PRED_BIAS = 4.0
    a.NORM_REG_TARGETS = True
    a.SHIFT_OFFSET = 0.0
    a.IOU_LOSS_TYPE = "giou"
    a.REG_WEIGHT = 5.0
    a.FOCAL_LOSS_ALPHA = 0.25
    a.FOCAL_LOSS_GAMMA = 2.0
    a.POS_TEMPERATURE = 1.0 / 3.0
    a.SCORE_THRESH_TEST = 0.05
    a.TOPK_CANDIDATES_TEST = 1000
    a.NMS_THRESH_TEST = 0.6
