"""Gaussian keypoint targets (common.assigners.gaussian) against hand-computed values."""
import math

import pytest
import torch

from common.assigners import build_centernet_targets, draw_gaussian, gaussian_radius


@pytest.mark.parametrize(
    "hw,bug07,fixed07,fixed03",
    [((10, 10), 2.73, 0.82, 2.26), ((20, 40), 7.36, 2.15, 5.78), ((50, 50), 13.67, 4.08, 11.31),
     ((100, 30), 12.93, 3.67, 9.45)],
)
def test_gaussian_radius_both_variants(hw, bug07, fixed07, fixed03):
    h, w = torch.tensor([float(hw[0])]), torch.tensor([float(hw[1])])
    assert gaussian_radius(h, w, 0.7, "cornernet_bug").item() == pytest.approx(bug07, abs=0.01)
    assert gaussian_radius(h, w, 0.7, "cornernet_fixed").item() == pytest.approx(fixed07, abs=0.01)
    assert gaussian_radius(h, w, 0.3, "cornernet_fixed").item() == pytest.approx(fixed03, abs=0.01)


def test_gaussian_radius_closed_forms():
    # (10, 10), o = 0.7: bug r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / 2 with a3 = 2.8, b3 = -28, c3 = -30.
    bug = (-28 + math.sqrt(28 ** 2 + 4 * 2.8 * 30)) / 2
    # fixed: min of case 2 = (b2 - sqrt(b2^2 - 16 c2)) / 8 with b2 = 40, c2 = 30 (the smallest here).
    fixed = (40 - math.sqrt(1600 - 16 * 30)) / 8
    t = torch.tensor([10.0])
    assert gaussian_radius(t, t, 0.7, "cornernet_bug").item() == pytest.approx(bug, rel=1e-5)
    assert gaussian_radius(t, t, 0.7, "cornernet_fixed").item() == pytest.approx(fixed, rel=1e-5)
    with pytest.raises(ValueError, match="variant"):
        gaussian_radius(t, t, 0.7, "half_fixed")


def test_draw_gaussian_radius_one_by_hand():
    hm = torch.zeros(1, 5, 5)
    draw_gaussian(hm, torch.tensor([[2, 2]]), torch.tensor([1]), torch.tensor([0]))
    # sigma = (2 * 1 + 1) / 6 = 0.5 -> exp(-d2 / 0.5)
    e1, e2 = math.exp(-2.0), math.exp(-4.0)
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = torch.tensor([[e2, e1, e2], [e1, 1.0, e1], [e2, e1, e2]])
    torch.testing.assert_close(hm[0], expected)


def test_draw_gaussian_radius_zero_and_border_clipping():
    hm = torch.zeros(2, 4, 4)
    draw_gaussian(hm, torch.tensor([[0, 0], [3, 1]]), torch.tensor([2, 0]), torch.tensor([0, 1]))
    # Object 0 at the corner: only the quadrant inside the map, sigma = 5 / 6.
    s2 = 2 * (5 / 6) ** 2
    assert hm[0, 0, 0] == 1.0
    assert hm[0, 0, 2].item() == pytest.approx(math.exp(-4 / s2), rel=1e-5)
    assert hm[0, 2, 2].item() == pytest.approx(math.exp(-8 / s2), rel=1e-5)
    assert hm[0, 3, 3] == 0.0  # outside the radius
    # Object 1, radius 0: a single 1.0 pixel on channel 1.
    assert hm[1].sum() == 1.0 and hm[1, 1, 3] == 1.0


def test_overlapping_gaussians_of_one_class_keep_elementwise_max():
    centers, radii = torch.tensor([[3, 3], [5, 3]]), torch.tensor([2, 3])
    hm = torch.zeros(2, 8, 10)
    draw_gaussian(hm, centers, radii, torch.tensor([1, 1]))
    single = [torch.zeros(2, 8, 10), torch.zeros(2, 8, 10)]
    for k in range(2):
        draw_gaussian(single[k], centers[k:k + 1], radii[k:k + 1], torch.tensor([1]))
    torch.testing.assert_close(hm, torch.maximum(single[0], single[1]))
    assert hm[0].sum() == 0
    assert hm[1, 3, 3] == 1.0 and hm[1, 3, 5] == 1.0
    # Between the two peaks the larger of the two Gaussians wins (not their sum).
    g0 = math.exp(-1 / (2 * (5 / 6) ** 2))
    g1 = math.exp(-1 / (2 * (7 / 6) ** 2))
    assert hm[1, 3, 4].item() == pytest.approx(max(g0, g1), rel=1e-5)


def test_build_centernet_targets_by_hand():
    # Box (8, 12)-(40, 36) at stride 4 -> (2, 3)-(10, 9): w 8, h 6, centre (6, 6).
    # Box (1, 1)-(7, 11) -> (0.25, 0.25)-(1.75, 2.75): w 1.5, h 2.5, centre (1.0, 1.5).
    boxes = torch.tensor([[8.0, 12.0, 40.0, 36.0], [1.0, 1.0, 7.0, 11.0], [50.0, 50.0, 50.0, 60.0]])
    t = build_centernet_targets(boxes, torch.tensor([0, 2, 1]), 3, (16, 16), 4, 0.7, "cornernet_bug")
    assert t["heatmap"].shape == (3, 16, 16)
    torch.testing.assert_close(t["wh"], torch.tensor([[8.0, 6.0], [1.5, 2.5]]))
    torch.testing.assert_close(t["offset"], torch.tensor([[0.0, 0.0], [0.0, 0.5]]))
    torch.testing.assert_close(t["index"], torch.tensor([6 * 16 + 6, 1 * 16 + 1]))
    torch.testing.assert_close(t["classes"], torch.tensor([0, 2]))  # the empty box is dropped
    assert t["heatmap"][0, 6, 6] == 1.0 and t["heatmap"][2, 1, 1] == 1.0
    assert t["heatmap"][1].sum() == 0
    # radius of box 0 = int(gaussian_radius(6, 8)) drawn around (6, 6).
    r = int(gaussian_radius(torch.tensor([6.0]), torch.tensor([8.0])).item())
    assert t["heatmap"][0, 6, 6 + r] > 0 and t["heatmap"][0, 6, 6 + r + 1] == 0


def test_build_centernet_targets_empty_and_bad_class():
    t = build_centernet_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 2, (8, 8))
    assert t["heatmap"].sum() == 0 and t["wh"].shape == (0, 2)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_centernet_targets(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([5]), 2, (8, 8))
