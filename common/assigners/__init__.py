"""Label assigners shared by the detectors.

``HungarianMatcher`` (DETR / Sparse R-CNN one-to-one matching). OneNet's minimum-cost matcher
lives here too (``MinCostMatcher``).
"""
from .hungarian import HungarianMatcher
from .gaussian import GAUSSIAN_RADIUS_VARIANTS, build_centernet_targets, draw_gaussian, gaussian_radius  # noqa: F401
from .min_cost import MinCostMatcher
from .atss import ATSSAssigner, pairwise_iou_batched  # noqa: F401
from .fcos_targets import FCOS_INF, centerness_targets, fcos_size_ranges, fcos_targets  # noqa: F401

__all__ = ["HungarianMatcher", "MinCostMatcher"]
