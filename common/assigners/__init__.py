"""Label assigners shared by the detectors.

``HungarianMatcher`` (DETR / Sparse R-CNN one-to-one matching). OneNet's minimum-cost matcher
will live here too.
"""
from .hungarian import HungarianMatcher

__all__ = ["HungarianMatcher"]
