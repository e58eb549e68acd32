"""Box regression parametrisations (detectron2 v0.6 ``modeling/box_regression.py`` API).

* :class:`Box2BoxTransform`: R-CNN deltas ``(dx, dy, dw, dh)`` (Girshick et al., "Rich feature
  hierarchies", CVPR 2014, Appendix C), used by Faster R-CNN, RetinaNet, Sparse R-CNN.
* :class:`Box2BoxTransformLinear`: distances ``(l, t, r, b)`` from a reference point to the four
  box sides (FCOS, Tian et al., ICCV 2019, Eq. 1; OneNet, VFNet).

Both decode (``apply_deltas``) and encode (``get_deltas``) in float32 whatever the input dtype,
as detectron2 does (``deltas = deltas.float()``): under ``torch.autocast`` the heads' outputs are
float16/bfloat16, whose 8-11 bit mantissa cannot even represent pixel coordinates such as 786
(bfloat16 rounds it to 784). The returned boxes are float32.

Inputs may carry extra leading dimensions: ``deltas`` ``(..., k * 4)`` and ``boxes`` ``(..., 4)``
broadcast against each other on all but the last dimension (detectron2's ``(N, k * 4)`` /
``(N, 4)`` is the 2-D case), so a batch ``(B, R, 4)`` of deltas can be decoded on ``(R, 4)``
shared anchors without copying them.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Box2BoxTransform", "Box2BoxTransformLinear", "_DEFAULT_SCALE_CLAMP"]

# Value for clamping large dw and dh predictions: the heuristic is that we clamp such that dw and
# dh are no larger than what would transform a 16px box into a 1000px box (detectron2).
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_last_dim(name: str, t: torch.Tensor, multiple: int) -> None:
    if t.dim() < 1 or t.shape[-1] % multiple != 0 or t.shape[-1] == 0:
        raise ValueError(f"{name}: last dimension must be a non-zero multiple of {multiple}, got shape {tuple(t.shape)}")


class Box2BoxTransform:
    """R-CNN box parametrisation with per-coordinate weights (detectron2 ``Box2BoxTransform``).

    With source box centre ``(x_s, y_s)`` and size ``(w_s, h_s)`` and target ``(x_t, y_t, w_t, h_t)``::

        dx = wx (x_t - x_s) / w_s      dy = wy (y_t - y_s) / h_s
        dw = ww log(w_t / w_s)         dh = wh log(h_t / h_s)

    Decoding clamps ``dw / ww`` and ``dh / wh`` at ``scale_clamp`` so that ``exp`` cannot overflow.

    Args:
        weights: ``(wx, wy, ww, wh)``; e.g. (10, 10, 5, 5) for Fast R-CNN, (1, 1, 1, 1) for
            RPN/RetinaNet, (2, 2, 1, 1) for Sparse R-CNN.
        scale_clamp: upper clamp of the (un-weighted) ``dw, dh`` when decoding; default
            ``log(1000 / 16)`` (detectron2). Sparse R-CNN's authors use ``log(100000 / 16)``.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = _DEFAULT_SCALE_CLAMP) -> None:
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(f"Box2BoxTransform: weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
        self.weights: Tuple[float, float, float, float] = weights  # type: ignore[assignment]
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"Box2BoxTransform(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that transform ``src_boxes`` into ``target_boxes``.

        Args:
            src_boxes: ``(..., 4)`` XYXY_ABS source boxes (e.g. anchors or proposals), positive size.
            target_boxes: ``(..., 4)`` XYXY_ABS targets, broadcastable with ``src_boxes``.

        Returns:
            ``(..., 4)`` float32 deltas ``(dx, dy, dw, dh)``.

        Raises:
            ValueError: a source box has non-positive width or height (detectron2 asserts this),
                or the last dimension is not 4.
        """
        _check_last_dim("Box2BoxTransform.get_deltas src_boxes", src_boxes, 4)
        _check_last_dim("Box2BoxTransform.get_deltas target_boxes", target_boxes, 4)
        src_boxes = src_boxes.float()
        target_boxes = target_boxes.float()
        src_widths = src_boxes[..., 2] - src_boxes[..., 0]
        src_heights = src_boxes[..., 3] - src_boxes[..., 1]
        if not bool(((src_widths > 0) & (src_heights > 0)).all()):
            raise ValueError("Box2BoxTransform.get_deltas: source boxes must have positive width and height")
        src_ctr_x = src_boxes[..., 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[..., 1] + 0.5 * src_heights

        target_widths = target_boxes[..., 2] - target_boxes[..., 0]
        target_heights = target_boxes[..., 3] - target_boxes[..., 1]
        target_ctr_x = target_boxes[..., 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[..., 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Apply ``deltas`` to ``boxes`` (in float32).

        Args:
            deltas: ``(..., k * 4)``; ``deltas[..., 4i:4i+4]`` is the ``i``-th class-specific
                ``(dx, dy, dw, dh)`` for the box (k = 1 for class-agnostic regression).
            boxes: ``(..., 4)`` XYXY_ABS reference boxes, broadcastable with ``deltas`` on the
                leading dimensions.

        Returns:
            float32 XYXY_ABS boxes of the broadcast shape ``(..., k * 4)``.
        """
        _check_last_dim("Box2BoxTransform.apply_deltas deltas", deltas, 4)
        _check_last_dim("Box2BoxTransform.apply_deltas boxes", boxes, 4)
        deltas = deltas.float()  # ensure fp32 for decoding precision
        boxes = boxes.to(deltas.dtype)

        widths = boxes[..., 2] - boxes[..., 0]
        heights = boxes[..., 3] - boxes[..., 1]
        ctr_x = boxes[..., 0] + 0.5 * widths
        ctr_y = boxes[..., 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[..., 0::4] / wx
        dy = deltas[..., 1::4] / wy
        dw = deltas[..., 2::4] / ww
        dh = deltas[..., 3::4] / wh

        # Prevent sending too large values into torch.exp()
        dw = torch.clamp(dw, max=self.scale_clamp)
        dh = torch.clamp(dh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[..., None] + ctr_x[..., None]
        pred_ctr_y = dy * heights[..., None] + ctr_y[..., None]
        pred_w = torch.exp(dw) * widths[..., None]
        pred_h = torch.exp(dh) * heights[..., None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        pred_boxes = torch.stack((x1, y1, x2, y2), dim=-1)  # (..., k, 4)
        return pred_boxes.flatten(-2)


class Box2BoxTransformLinear:
    """Linear ``(l, t, r, b)`` parametrisation from the centre of a reference box
    (detectron2 ``Box2BoxTransformLinear``; FCOS Eq. 1).

    With reference centre ``(x, y)`` (a point: pass the zero-size box ``(x, y, x, y)``, see
    :meth:`points_to_boxes`) and target XYXY ``(x0, y0, x1, y1)``::

        l = x - x0    t = y - y0    r = x1 - x    b = y1 - y

    divided by the reference box's ``(w, h, w, h)`` when ``normalize_by_size`` (detectron2's FCOS,
    whose "anchors" are stride-sized boxes centred on the grid points). OneNet predicts raw pixel
    distances: ``normalize_by_size=False``.

    Decoding applies ``ReLU`` to the deltas first (so the box always contains its point; Sec. 2.1
    of Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection").

    Args:
        normalize_by_size: divide / multiply the distances by the reference box size.
    """

    def __init__(self, normalize_by_size: bool = True) -> None:
        self.normalize_by_size = bool(normalize_by_size)

    def __repr__(self) -> str:
        return f"Box2BoxTransformLinear(normalize_by_size={self.normalize_by_size})"

    @staticmethod
    def points_to_boxes(points: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` points ``(x, y)`` -> ``(..., 4)`` zero-size boxes ``(x, y, x, y)`` whose centre
        is exactly the point (``0.5 * (x + x) == x`` in floating point)."""
        if points.shape[-1] != 2:
            raise ValueError(f"Box2BoxTransformLinear.points_to_boxes: expected (..., 2) points, got {tuple(points.shape)}")
        return torch.cat((points, points), dim=-1)

    def _strides(self, boxes: torch.Tensor) -> torch.Tensor:
        stride_w = boxes[..., 2] - boxes[..., 0]
        stride_h = boxes[..., 3] - boxes[..., 1]
        return torch.stack((stride_w, stride_h, stride_w, stride_h), dim=-1)

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Distances from the centres of ``src_boxes`` to the sides of ``target_boxes``.

        Args:
            src_boxes: ``(..., 4)`` XYXY_ABS reference boxes (positive size if ``normalize_by_size``).
            target_boxes: ``(..., 4)`` XYXY_ABS, broadcastable with ``src_boxes``.

        Returns:
            ``(..., 4)`` float32 ``(l, t, r, b)`` (negative where the centre lies outside the target).
        """
        _check_last_dim("Box2BoxTransformLinear.get_deltas src_boxes", src_boxes, 4)
        _check_last_dim("Box2BoxTransformLinear.get_deltas target_boxes", target_boxes, 4)
        src_boxes = src_boxes.float()
        target_boxes = target_boxes.float()
        src_ctr_x = 0.5 * (src_boxes[..., 0] + src_boxes[..., 2])
        src_ctr_y = 0.5 * (src_boxes[..., 1] + src_boxes[..., 3])

        target_l = src_ctr_x - target_boxes[..., 0]
        target_t = src_ctr_y - target_boxes[..., 1]
        target_r = target_boxes[..., 2] - src_ctr_x
        target_b = target_boxes[..., 3] - src_ctr_y

        deltas = torch.stack((target_l, target_t, target_r, target_b), dim=-1)
        if self.normalize_by_size:
            deltas = deltas / self._strides(src_boxes)
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes at ``deltas`` = ``(l, t, r, b)`` from the centres of ``boxes`` (in float32).

        Args:
            deltas: ``(..., k * 4)`` distances (clamped at 0 by ReLU).
            boxes: ``(..., 4)`` XYXY_ABS reference boxes (or :meth:`points_to_boxes`), broadcastable
                with ``deltas`` on the leading dimensions.

        Returns:
            float32 XYXY_ABS boxes of the broadcast shape ``(..., k * 4)``.
        """
        _check_last_dim("Box2BoxTransformLinear.apply_deltas deltas", deltas, 4)
        _check_last_dim("Box2BoxTransformLinear.apply_deltas boxes", boxes, 4)
        # Ensure the output is a valid box. See Sec 2.1 of https://arxiv.org/abs/2006.09214
        deltas = F.relu(deltas.float())
        boxes = boxes.to(deltas.dtype)

        ctr_x = 0.5 * (boxes[..., 0] + boxes[..., 2])
        ctr_y = 0.5 * (boxes[..., 1] + boxes[..., 3])
        if self.normalize_by_size:
            strides = self._strides(boxes)  # (..., 4)
            k = deltas.shape[-1] // 4
            deltas = deltas * strides.repeat(*([1] * (strides.dim() - 1)), k)

        x1 = ctr_x[..., None] - deltas[..., 0::4]
        y1 = ctr_y[..., None] - deltas[..., 1::4]
        x2 = ctr_x[..., None] + deltas[..., 2::4]
        y2 = ctr_y[..., None] + deltas[..., 3::4]
        return torch.stack((x1, y1, x2, y2), dim=-1).flatten(-2)
