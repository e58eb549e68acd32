"""Losses shared by the detectors (focal, focal matching cost, GIoU).

All are thin, documented wrappers on torchvision/fvcore so that every project uses the same
numerics: ``sigmoid_focal_loss`` (classification), ``focal_classification_cost`` (matcher cost
of Sparse R-CNN / OneNet / Deformable-DETR), ``giou_loss`` (box regression).
"""
from .focal import focal_classification_cost, sigmoid_focal_loss
from .giou import giou_loss

__all__ = ["sigmoid_focal_loss", "focal_classification_cost", "giou_loss"]
