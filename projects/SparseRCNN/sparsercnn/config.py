"""Config keys of Sparse R-CNN (authors' ``projects/SparseRCNN/sparsercnn/config.py`` defaults)."""
from __future__ import annotations

from common.config import CfgNode as CN

__all__ = ["add_sparsercnn_config"]

# Multi-scale TTA sizes and per-scale sqrt(area) ranges of the authors' cvpods-style TTA.
_TTA_MIN_SIZES = (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800, 800)
_TTA_SCALE_RANGES = (
    [96, 10000], [96, 10000], [64, 10000], [64, 10000], [64, 10000], [0, 10000], [0, 10000],
    [0, 256], [0, 256], [0, 192], [0, 192], [0, 96], [0, 10000],
)


def add_sparsercnn_config(cfg: CN) -> None:
    """Add ``MODEL.SparseRCNN.*`` and Sparse R-CNN's solver/TTA defaults to ``cfg`` in place.

    Sets ``SOLVER.OPTIMIZER = "ADAMW"`` and ``SOLVER.BACKBONE_MULTIPLIER = 1.0`` like the authors
    (YAML files and CLI overrides still win, they are merged afterwards). ``TEST.AUG`` keys are
    only added when missing, so other projects' TTA settings are not clobbered; they drive
    :class:`SparseRCNNWithTTA` (``TEST.AUG.ENABLED``; ``CVPODS_TTA`` box voting or NMS merge,
    ``SCALE_FILTER`` with one ``SCALE_RANGES`` pair per ``MIN_SIZES`` entry).
    """
    cfg.MODEL.SparseRCNN = CN()
    sr = cfg.MODEL.SparseRCNN
    sr.NUM_CLASSES = 80
    sr.NUM_PROPOSALS = 300

    # RCNN head.
    sr.NHEADS = 8
    sr.DROPOUT = 0.0
    sr.DIM_FEEDFORWARD = 2048
    sr.ACTIVATION = "relu"
    sr.HIDDEN_DIM = 256  # must equal MODEL.FPN.OUT_CHANNELS
    sr.NUM_CLS = 1
    sr.NUM_REG = 3
    sr.NUM_HEADS = 6  # iterative stages

    # Dynamic convolution.
    sr.NUM_DYNAMIC = 2
    sr.DIM_DYNAMIC = 64

    # Loss / matching.
    sr.CLASS_WEIGHT = 2.0
    sr.GIOU_WEIGHT = 2.0
    sr.L1_WEIGHT = 5.0
    sr.DEEP_SUPERVISION = True
    sr.NO_OBJECT_WEIGHT = 0.1

    # Focal loss.
    sr.USE_FOCAL = True
    sr.ALPHA = 0.25
    sr.GAMMA = 2.0
    sr.PRIOR_PROB = 0.01

    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0

    if "AUG" not in cfg.TEST:
        cfg.TEST.AUG = CN({"ENABLED": False})
        cfg.TEST.AUG.MAX_SIZE = 4000
        cfg.TEST.AUG.FLIP = True
    aug = cfg.TEST.AUG
    if "CVPODS_TTA" not in aug:
        # First time a Sparse R-CNN TTA block is added: use the authors' scales.
        aug.MIN_SIZES = _TTA_MIN_SIZES
        aug.CVPODS_TTA = True
    if "SCALE_FILTER" not in aug:
        aug.SCALE_FILTER = True
    if "SCALE_RANGES" not in aug:
        aug.SCALE_RANGES = _TTA_SCALE_RANGES
