"""Config keys of OneNet (authors' ``projects/OneNet/onenet/config.py`` defaults) plus ours.

Ours (not in the authors' code), all defaulting to the authors' behaviour:

* ``MODEL.OneNet.MATCHER_MODE``: ``"hungarian"`` (released code, one-to-one
  ``linear_sum_assignment`` over all locations) or ``"argmin"`` (paper Algorithm 1).
* ``MODEL.OneNet.NUM_HEADS_TRAIN``: number of cascaded heads in training (paper Sec. 4.1
  "Multi-head Training"); 1 = off (state dict identical to the authors'); inference always uses
  stage 1 only.
"""
from __future__ import annotations

from common.config import CfgNode as CN

__all__ = ["add_onenet_config"]


def add_onenet_config(cfg: CN) -> None:
    """Add ``MODEL.OneNet.*`` and OneNet's solver defaults to ``cfg`` in place.

    Sets ``SOLVER.OPTIMIZER = "ADAMW"`` and ``SOLVER.BACKBONE_MULTIPLIER = 1.0`` like the authors
    (YAML files and command-line overrides are merged afterwards and win). Keys (authors' defaults):

    - ``NUM_CLASSES`` 80; ``NMS`` False (ablation only: batched NMS IoU 0.5 after top-k);
      ``HEAD`` "CenterNet" | "FCOS" | "RetinaNet"; ``PRE_DEFINE`` False (the authors' fixed-point
      matching ablation, not ported: True raises); ``IN_FEATURES`` res2..res5; ``ACTIVATION`` "relu".
    - Neck: ``DECONV_CHANNEL`` [2048, 256, 128, 64] (input, then per deconv layer),
      ``DECONV_KERNEL`` [4, 4, 4], ``DCN`` True, ``MODULATE_DEFORM`` True.
    - FPN heads: ``FEATURES_STRIDE`` [8, 16, 32, 64, 128], ``OBJECT_SIZES_OF_INTEREST`` (PRE_DEFINE
      only), ``NUM_CONV`` 4, ``CONV_NORM`` "GN", ``CONV_CHANNELS`` 256.
    - Matching costs ``CLASS_COST`` 2, ``GIOU_COST`` 2, ``L1_COST`` 5; loss weights
      ``CLASS_WEIGHT`` 2, ``GIOU_WEIGHT`` 2, ``L1_WEIGHT`` 5; focal ``ALPHA`` 0.25, ``GAMMA`` 2,
      ``PRIOR_PROB`` 0.01.
    - Ours: ``MATCHER_MODE`` "hungarian", ``NUM_HEADS_TRAIN`` 1 (see module docstring).
    """
    cfg.MODEL.OneNet = CN()
    on = cfg.MODEL.OneNet
    on.NUM_CLASSES = 80
    on.NMS = False
    on.HEAD = "CenterNet"
    on.PRE_DEFINE = False
    on.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    on.ACTIVATION = "relu"

    # Deconvolution neck (CenterNet-style head).
    on.DECONV_CHANNEL = [2048, 256, 128, 64]
    on.DECONV_KERNEL = [4, 4, 4]
    on.DCN = True
    on.MODULATE_DEFORM = True

    # FCOS / RetinaNet heads.
    on.FEATURES_STRIDE = [8, 16, 32, 64, 128]
    on.OBJECT_SIZES_OF_INTEREST = [[-1, 64], [64, 128], [128, 256], [256, 512], [512, float("inf")]]
    on.NUM_CONV = 4
    on.CONV_NORM = "GN"
    on.CONV_CHANNELS = 256

    # Matching costs (Eq. 3) and loss weights.
    on.CLASS_COST = 2.0
    on.GIOU_COST = 2.0
    on.L1_COST = 5.0
    on.CLASS_WEIGHT = 2.0
    on.GIOU_WEIGHT = 2.0
    on.L1_WEIGHT = 5.0

    # Focal loss.
    on.ALPHA = 0.25
    on.GAMMA = 2.0
    on.PRIOR_PROB = 0.01

    # Ours.
    on.MATCHER_MODE = "hungarian"
    on.NUM_HEADS_TRAIN = 1

    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
