"""Mixed precision: matcher costs, box decoding and losses stay float32 under ``torch.autocast``.

Also the hand-computed behaviour of ``common.modeling.box_regression`` (detectron2 v0.6 API).
"""
from __future__ import annotations

import math

import pytest
import torch

from common.modeling import Box2BoxTransform, Box2BoxTransformLinear
from common.modeling.box_regression import _DEFAULT_SCALE_CLAMP


# --------------------------------------------------------------------------- box regression
def test_box2box_transform_hand_values():
    t = Box2BoxTransform(weights=(2.0, 2.0, 1.0, 1.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # ctr (5, 10), size (10, 20)
    tgt = torch.tensor([[1.0, 2.0, 12.0, 18.0]])  # ctr (6.5, 10), size (11, 16)
    d = t.get_deltas(src, tgt)
    expected = torch.tensor([[2 * 1.5 / 10, 0.0, math.log(11 / 10), math.log(16 / 20)]])
    torch.testing.assert_close(d, expected)
    torch.testing.assert_close(t.apply_deltas(d, src), tgt)
    # Class-specific deltas (N, k*4) decode each group of 4 on the same box (detectron2 layout).
    torch.testing.assert_close(t.apply_deltas(torch.cat([d, torch.zeros_like(d)], 1), src),
                               torch.cat([tgt, src], 1))
    # dw is clamped at log(1000/16): a 16-px box grows to at most 1000 px.
    big = Box2BoxTransform((1, 1, 1, 1)).apply_deltas(torch.tensor([[0.0, 0.0, 50.0, 50.0]]),
                                                      torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    torch.testing.assert_close(big, torch.tensor([[8.0 - 500.0, 8.0 - 500.0, 8.0 + 500.0, 8.0 + 500.0]]))
    assert _DEFAULT_SCALE_CLAMP == math.log(1000.0 / 16)
    with pytest.raises(ValueError, match="positive width"):
        t.get_deltas(torch.tensor([[0.0, 0.0, 0.0, 5.0]]), tgt)
    with pytest.raises(ValueError, match="weights"):
        Box2BoxTransform((1.0, 1.0, 1.0))


def test_box2box_transform_linear_hand_values():
    src = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4), "stride" 8
    tgt = torch.tensor([[1.0, 2.0, 12.0, 20.0]])
    raw = Box2BoxTransformLinear(normalize_by_size=False)
    d = raw.get_deltas(src, tgt)
    torch.testing.assert_close(d, torch.tensor([[3.0, 2.0, 8.0, 16.0]]))
    torch.testing.assert_close(raw.apply_deltas(d, src), tgt)
    norm = Box2BoxTransformLinear(normalize_by_size=True)
    dn = norm.get_deltas(src, tgt)
    torch.testing.assert_close(dn, torch.tensor([[3.0, 2.0, 8.0, 16.0]]) / 8)
    torch.testing.assert_close(norm.apply_deltas(dn, src), tgt)
    # ReLU on decode: negative distances collapse onto the point.
    torch.testing.assert_close(raw.apply_deltas(torch.tensor([[-5.0, -1.0, 2.0, 3.0]]), src),
                               torch.tensor([[4.0, 4.0, 6.0, 7.0]]))
    # Points: (x, y) -> (x, y, x, y), centre exactly the point.
    pts = torch.tensor([[786.0, 790.0]])
    torch.testing.assert_close(raw.points_to_boxes(pts), torch.tensor([[786.0, 790.0, 786.0, 790.0]]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_box_decoding_is_float32_for_low_precision_deltas(dtype):
    """Half-precision head outputs are decoded in float32: grid points 786/790/794 stay exact."""
    pts = torch.tensor([[786.0, 790.0], [794.0, 2.0]])
    ltrb = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.5, 0.25, 2.0, 1.0]]])  # (1, 2, 4), exact in bf16
    lin = Box2BoxTransformLinear(normalize_by_size=False)
    boxes = lin.apply_deltas(ltrb.to(dtype), lin.points_to_boxes(pts))
    assert boxes.dtype == torch.float32
    expected = torch.tensor([[[785.0, 788.0, 789.0, 794.0], [793.5, 1.75, 796.0, 3.0]]])
    assert torch.equal(boxes, expected)

    anchors = torch.tensor([[780.0, 784.0, 796.0, 800.0]])
    deltas = torch.tensor([[0.125, -0.25, 0.5, 0.0]])
    t = Box2BoxTransform((2.0, 2.0, 1.0, 1.0))
    assert torch.equal(t.apply_deltas(deltas.to(dtype), anchors), t.apply_deltas(deltas, anchors))
