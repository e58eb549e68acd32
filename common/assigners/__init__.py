"""Label assigners shared by the detectors.

``HungarianMatcher`` (DETR / Sparse R-CNN one-to-one matching). OneNet's minimum-cost matcher
lives here too (``MinCostMatcher``).
"""
from .hungarian import HungarianMatcher
from .min_cost import MinCostMatcher

__all__ = ["HungarianMatcher", "MinCostMatcher"]
