"""Colour palette for visualisation (same functions as detectron2 ``detectron2/utils/colormap.py``).

The palette is generated (golden-ratio hue steps with alternating saturation/value) rather than
detectron2's hand-picked table: neighbouring indices get clearly different hues, and the exact
colours do not matter to any result.
"""
from __future__ import annotations

import random
from typing import List

import cv2
import numpy as np

__all__ = ["colormap", "random_color", "random_colors"]

_NUM_COLORS = 74
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def _build_palette(n: int) -> np.ndarray:
    """``(n, 3)`` float32 RGB colours in [0, 1]."""
    idx = np.arange(n, dtype=np.float32)
    hsv = np.empty((1, n, 3), dtype=np.float32)
    hsv[0, :, 0] = (idx * _GOLDEN_RATIO_CONJUGATE % 1.0) * 360.0  # OpenCV float HSV: hue in degrees
    hsv[0, :, 1] = np.where(idx.astype(np.int64) // 2 % 2 == 0, 0.85, 0.55)
    hsv[0, :, 2] = np.where(idx.astype(np.int64) // 5 % 2 == 0, 0.95, 0.75)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


_COLORS = _build_palette(_NUM_COLORS)


def colormap(rgb: bool = False, maximum: int = 255) -> np.ndarray:
    """The whole palette.

    Args:
        rgb: channel order RGB when True, BGR (OpenCV's) otherwise.
        maximum: 255 for 0..255 values, 1 for 0..1.

    Returns:
        ``(K, 3)`` float32 array (K = 74).
    """
    colors = _COLORS * maximum
    return colors if rgb else colors[:, ::-1].copy()


def random_color(rgb: bool = False, maximum: int = 255) -> np.ndarray:
    """One palette colour drawn with ``np.random``: a ``(3,)`` float32 array in [0, maximum]."""
    color = _COLORS[np.random.randint(0, len(_COLORS))] * maximum
    return color if rgb else color[::-1].copy()


def random_colors(N: int, rgb: bool = False, maximum: int = 255) -> List[np.ndarray]:
    """``N`` distinct palette colours (``N <= 74``), each a ``(3,)`` float32 array.

    Raises:
        ValueError: ``N`` exceeds the palette size.
    """
    if N > len(_COLORS):
        raise ValueError(f"random_colors: asked for {N} distinct colours, the palette has {len(_COLORS)}")
    colors = [_COLORS[i] * maximum for i in random.sample(range(len(_COLORS)), N)]
    return colors if rgb else [c[::-1].copy() for c in colors]
