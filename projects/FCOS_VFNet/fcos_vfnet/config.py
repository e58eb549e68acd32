"""Config keys of FCOS (``MODEL.FCOS``, AdelaiDet's names and defaults, ``adet/config/defaults.py``),
ATSS (``MODEL.ATSS``) and VarifocalNet (``MODEL.VFNET``) (mmdetection's ``atss_r50_fpn_1x_coco.py``
and ``vfnet_r50_fpn_1x_coco.py`` values), plus the FPN P6/P7 keys of
``common.modeling.backbone.fpn.add_fpn_top_block_config``.

Ours (not AdelaiDet keys), defaulting to AdelaiDet's behaviour:

* ``MODEL.FCOS.NORM_REG_TARGETS`` (official FCOS ``NORM_REG_TARGETS``): True = ``ReLU(scale * x)``
  in stride units (FCOS-imprv, AdelaiDet); False = ``exp(scale * x)`` in pixels (the original FCOS).
* ``MODEL.FCOS.CENTERNESS_ON_REG`` (official FCOS ``CENTERNESS_ON_REG``): centerness on the box
  tower (True, imprv / AdelaiDet) or the classification tower (False, original FCOS).
"""
from __future__ import annotations

from common.config import CfgNode as CN
from common.modeling.backbone.fpn import add_fpn_top_block_config

__all__ = ["add_atss_config", "add_fcos_config", "add_fcos_vfnet_config", "add_vfnet_config"]

_P3P7 = ["p3", "p4", "p5", "p6", "p7"]


def add_fcos_config(cfg: CN) -> None:
    """Add ``MODEL.FCOS.*`` (AdelaiDet defaults) and the FPN top-block keys to ``cfg`` in place.

    Keys: ``NUM_CLASSES`` 80; ``IN_FEATURES`` p3..p7; ``PRIOR_PROB`` 0.01; ``INFERENCE_TH_TRAIN`` /
    ``INFERENCE_TH_TEST`` 0.05 (on the class probability, before centerness unless
    ``THRESH_WITH_CTR``); ``NMS_TH`` 0.6; ``PRE_NMS_TOPK_TRAIN`` / ``_TEST`` 1000 (per level);
    ``POST_NMS_TOPK_TRAIN`` / ``_TEST`` 100; ``NORM`` "GN" (or ""); ``USE_SCALE`` True;
    ``THRESH_WITH_CTR`` False; ``LOSS_ALPHA`` 0.25, ``LOSS_GAMMA`` 2.0 (focal);
    ``SIZES_OF_INTEREST`` [64, 128, 256, 512]; ``USE_RELU`` True (ReLU in the towers);
    ``USE_DEFORMABLE`` False (modulated deformable last tower conv); ``NUM_CLS_CONVS`` /
    ``NUM_BOX_CONVS`` 4, ``NUM_SHARE_CONVS`` 0; ``CENTER_SAMPLE`` True, ``POS_RADIUS`` 1.5;
    ``LOC_LOSS_TYPE`` "giou" ("iou", "linear_iou"); ``BOX_QUALITY`` "ctrness";
    ``NORM_REG_TARGETS`` True, ``CENTERNESS_ON_REG`` True (ours, see module docstring).
    """
    add_fpn_top_block_config(cfg)
    cfg.MODEL.FCOS = CN()
    f = cfg.MODEL.FCOS
    f.NUM_CLASSES = 80
    f.IN_FEATURES = list(_P3P7)
    f.PRIOR_PROB = 0.01
    f.INFERENCE_TH_TRAIN = 0.05
    f.INFERENCE_TH_TEST = 0.05
    f.NMS_TH = 0.6
    f.PRE_NMS_TOPK_TRAIN = 1000
    f.PRE_NMS_TOPK_TEST = 1000
    f.POST_NMS_TOPK_TRAIN = 100
    f.POST_NMS_TOPK_TEST = 100
    f.TOP_LEVELS = 2
    f.NORM = "GN"
    f.USE_SCALE = True
    f.THRESH_WITH_CTR = False
    f.LOSS_ALPHA = 0.25
    f.LOSS_GAMMA = 2.0
    f.SIZES_OF_INTEREST = [64, 128, 256, 512]
    f.USE_RELU = True
    f.USE_DEFORMABLE = False
    f.NUM_CLS_CONVS = 4
    f.NUM_BOX_CONVS = 4
    f.NUM_SHARE_CONVS = 0
    f.CENTER_SAMPLE = True
    f.POS_RADIUS = 1.5
    f.LOC_LOSS_TYPE = "giou"
    f.BOX_QUALITY = "ctrness"
    f.NORM_REG_TARGETS = True
    f.CENTERNESS_ON_REG = True


def add_atss_config(cfg: CN) -> None:
    """Add ``MODEL.ATSS.*`` (mmdetection ``atss_r50_fpn_1x_coco.py``) and the FPN top-block keys.

    Keys: ``NUM_CLASSES`` 80; ``IN_FEATURES`` p3..p7; ``NUM_CONVS`` 4; ``NORM`` "GN";
    ``CONV_BIAS`` False (mmdet ``ConvModule`` with GN); ``PRIOR_PROB`` 0.01; ``ANCHOR_SCALE`` 8 (one
    square anchor of side 8 * stride per location, centred at ``(j*s, i*s)``); ``TOPK`` 9;
    ``BBOX_REG_WEIGHTS`` (10, 10, 5, 5) (mmdet ``DeltaXYWHBBoxCoder`` stds 0.1, 0.1, 0.2, 0.2);
    ``FOCAL_LOSS_ALPHA`` 0.25, ``FOCAL_LOSS_GAMMA`` 2.0; ``LOSS_BBOX_WEIGHT`` 2.0 (GIoU);
    ``LOSS_CENTERNESS_WEIGHT`` 1.0; ``SCORE_THRESH_TEST`` 0.05; ``TOPK_CANDIDATES_TEST`` 1000;
    ``NMS_THRESH_TEST`` 0.6 (detections per image: ``TEST.DETECTIONS_PER_IMAGE``).
    """
    add_fpn_top_block_config(cfg)
    cfg.MODEL.ATSS = CN()
    a = cfg.MODEL.ATSS
    a.NUM_CLASSES = 80
    a.IN_FEATURES = list(_P3P7)
    a.NUM_CONVS = 4
    a.NORM = "GN"
    a.CONV_BIAS = False
    a.PRIOR_PROB = 0.01
    a.ANCHOR_SCALE = 8.0
    a.TOPK = 9
    a.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    a.FOCAL_LOSS_ALPHA = 0.25
    a.FOCAL_LOSS_GAMMA = 2.0
    a.LOSS_BBOX_WEIGHT = 2.0
    a.LOSS_CENTERNESS_WEIGHT = 1.0
    a.SCORE_THRESH_TEST = 0.05
    a.TOPK_CANDIDATES_TEST = 1000
    a.NMS_THRESH_TEST = 0.6


def add_vfnet_config(cfg: CN) -> None:
    """Add ``MODEL.VFNET.*`` (mmdetection / VarifocalNet ``vfnet_r50_fpn_1x_coco.py``) and the FPN keys.

    Keys: ``NUM_CLASSES`` 80; ``IN_FEATURES`` p3..p7; ``NUM_CONVS`` 3 (per branch); ``NORM`` "GN";
    ``CONV_BIAS`` False; ``DCN_ON_LAST_CONV`` False; ``PRIOR_PROB`` 0.01;
    ``SIZES_OF_INTEREST`` [64, 128, 256, 512] (regress ranges; with ``BBOX_NORM_TYPE`` "reg_denom"
    the initial box is ``exp(scale * x) * reg_denom`` with reg_denoms 64, 128, 256, 512, 1024;
    "stride": ``* stride``); ``GRADIENT_MUL`` 0.1 (offset gradient into the initial box);
    ``USE_ATSS`` True, ``ANCHOR_SCALE`` 8, ``TOPK`` 9 (ATSS assignment; False: FCOS assignment
    with ``CENTER_SAMPLING`` False / ``CENTER_SAMPLE_RADIUS`` 1.5); varifocal loss ``VFL_ALPHA``
    0.75, ``VFL_GAMMA`` 2.0, ``VFL_IOU_WEIGHTED`` True, ``LOSS_CLS_WEIGHT`` 1.0; GIoU
    ``LOSS_BBOX_WEIGHT`` 1.5 (initial), ``LOSS_BBOX_REFINE_WEIGHT`` 2.0 (refined);
    ``SCORE_THRESH_TEST`` 0.05, ``TOPK_CANDIDATES_TEST`` 1000, ``NMS_THRESH_TEST`` 0.6.
    """
    add_fpn_top_block_config(cfg)
    cfg.MODEL.VFNET = CN()
    v = cfg.MODEL.VFNET
    v.NUM_CLASSES = 80
    v.IN_FEATURES = list(_P3P7)
    v.NUM_CONVS = 3
    v.NORM = "GN"
    v.CONV_BIAS = False
    v.DCN_ON_LAST_CONV = False
    v.PRIOR_PROB = 0.01
    v.SIZES_OF_INTEREST = [64, 128, 256, 512]
    v.BBOX_NORM_TYPE = "reg_denom"
    v.GRADIENT_MUL = 0.1
    v.USE_ATSS = True
    v.ANCHOR_SCALE = 8.0
    v.TOPK = 9
    v.CENTER_SAMPLING = False
    v.CENTER_SAMPLE_RADIUS = 1.5
    v.VFL_ALPHA = 0.75
    v.VFL_GAMMA = 2.0
    v.VFL_IOU_WEIGHTED = True
    v.LOSS_CLS_WEIGHT = 1.0
    v.LOSS_BBOX_WEIGHT = 1.5
    v.LOSS_BBOX_REFINE_WEIGHT = 2.0
    v.SCORE_THRESH_TEST = 0.05
    v.TOPK_CANDIDATES_TEST = 1000
    v.NMS_THRESH_TEST = 0.6


def add_fcos_vfnet_config(cfg: CN) -> None:
    """All three: :func:`add_fcos_config`, :func:`add_atss_config`, :func:`add_vfnet_config`."""
    add_fcos_config(cfg)
    add_atss_config(cfg)
    add_vfnet_config(cfg)
