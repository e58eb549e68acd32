"""Losses shared by the detectors (focal, focal matching cost, GIoU).

All are thin, documented wrappers on torchvision/fvcore so that every project uses the same
numerics: ``sigmoid_focal_loss`` (classification), ``focal_classification_cost`` (matcher cost
of Sparse R-CNN / OneNet / Deformable-DETR), ``giou_loss`` (box regression), and the matched-pair losses of set-prediction detectors
(``set_focal_loss``, ``set_box_losses``, ``num_boxes_across_processes``).
"""
from .focal import focal_classification_cost, sigmoid_focal_loss
from .giou import giou_loss
from .iou_loss import IOU_LOSS_TYPES, iou_loss  # noqa: F401
from .varifocal import varifocal_loss  # noqa: F401
from .autoassign import autoassign_losses, negative_bag_loss, positive_bag_loss  # noqa: F401
from .heatmap_focal import clamped_sigmoid, gathered_l1_loss, heatmap_focal_loss  # noqa: F401
from .embedding import pull_push_loss  # noqa: F401
from .set_prediction import (
    matched_batch_index,
    num_boxes_across_processes,
    set_box_losses,
    set_focal_loss,
    set_targets_from_instances,
    weighted_losses,
)

__all__ = [
    "sigmoid_focal_loss",
    "focal_classification_cost",
    "giou_loss",
    "matched_batch_index",
    "num_boxes_across_processes",
    "set_focal_loss",
    "set_box_losses",
    "set_targets_from_instances",
    "weighted_losses",
]
