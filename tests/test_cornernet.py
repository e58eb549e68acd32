"""CornerNet / CenterNet-Triplets unit tests: corner pairing, central-region rescoring, pull/push,
targets, the CornerNet crop, test-time geometry, tiny detectors (train with and without boxes,
predict), and parameter counts of the full configs against the authors' models."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.data.transforms.centernet_aug import CornerNetRandomCrop
from common.losses import pull_push_loss
from common.modeling import META_ARCH_REGISTRY, build_model
from common.structures import Boxes, Instances
from projects.CornerNet.cornernet import (
    add_cornernet_config,
    build_corner_targets,
    central_region_rescore,
    cornernet_decode,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "projects" / "CornerNet" / "configs"
STATE_DICTS = REPO.parent / "shared" / "reference" / "state_dicts"


# ---------------------------------------------------------------------------------------------
def _corner_maps():
    C, H, W = 2, 8, 8
    tl_heat, br_heat = torch.zeros(1, C, H, W), torch.zeros(1, C, H, W)
    tl_tag, br_tag = torch.zeros(1, 1, H, W), torch.zeros(1, 1, H, W)
    tl_off, br_off = torch.zeros(1, 2, H, W), torch.zeros(1, 2, H, W)
    # top-left corners: (class, x, y, score, embedding)
    for c, x, y, s, e in [(0, 1, 1, 0.9, 0.0), (1, 2, 2, 0.8, 3.0), (0, 3, 0, 0.4, 2.0)]:
        tl_heat[0, c, y, x], tl_tag[0, 0, y, x] = s, e
    # bottom-right corners
    for c, x, y, s, e in [(0, 5, 6, 0.7, 0.5), (1, 6, 5, 0.6, 3.75), (0, 0, 0, 0.5, 0.0)]:
        br_heat[0, c, y, x], br_tag[0, 0, y, x] = s, e
    tl_off[0, :, 1, 1] = torch.tensor([0.25, 0.5])
    return tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off


def test_pairing_keeps_and_drops_exactly_by_the_rules():
    dets = cornernet_decode(*_corner_maps(), k=3, ae_threshold=0.5, kernel=3, num_dets=9)
    valid = dets["scores"][0] > -1
    # (1,1)+(5,6): same class, |0 - 0.5| = 0.5 is not > 0.5 -> kept, score (0.9 + 0.7) / 2, tl offset added.
    # (2,2)+(6,5): same class but |3 - 3.75| > 0.5 -> dropped. (1,1)+(6,5): class mismatch.
    # (1,1)+(0,0) and (3,0)+(0,0): br left of / above tl -> dropped. (3,0)+(5,6): |2 - 0.5| > 0.5.
    assert int(valid.sum()) == 1
    torch.testing.assert_close(dets["scores"][0, 0], torch.tensor(0.8))
    torch.testing.assert_close(dets["boxes"][0, 0], torch.tensor([1.25, 1.5, 5.0, 6.0]))
    assert int(dets["classes"][0, 0]) == 0
    torch.testing.assert_close(dets["tl_scores"][0, 0], torch.tensor(0.9))
    torch.testing.assert_close(dets["br_scores"][0, 0], torch.tensor(0.7))
    # With a looser threshold the class-1 pair appears too; the class-mismatched pairs never do.
    dets = cornernet_decode(*_corner_maps(), k=3, ae_threshold=1.0, num_dets=9)
    kept = {(int(c), tuple(b.tolist())) for c, b, s in zip(dets["classes"][0], dets["boxes"][0], dets["scores"][0])
            if s > -1}
    assert kept == {(0, (1.25, 1.5, 5.0, 6.0)), (1, (2.0, 2.0, 6.0, 5.0))}
    assert torch.all(dets["scores"][0, :-1] >= dets["scores"][0, 1:])


def _rescore(box, score, cls, centers, center_scores, center_classes):
    return float(central_region_rescore(
        torch.tensor([[box]], dtype=torch.float32), torch.tensor([[score]]), torch.tensor([[cls]]),
        torch.tensor([centers], dtype=torch.float32), torch.tensor([center_scores]), torch.tensor([center_classes]))[0, 0])


def test_central_region_rescoring_rules():
    small = [0.0, 0.0, 90.0, 90.0]  # area 8100 <= 22500: n = 3, region (30, 60) x (30, 60)
    assert _rescore(small, 0.6, 1, [[45, 45]], [0.9], [1]) == pytest.approx((2 * 0.6 + 0.9) / 3)
    assert _rescore(small, 0.6, 1, [[61, 45]], [0.9], [1]) == -1  # outside
    assert _rescore(small, 0.6, 1, [[60, 45]], [0.9], [1]) == -1  # on the border: not strictly inside
    assert _rescore(small, 0.6, 1, [[45, 45]], [0.9], [2]) == -1  # other class
    assert _rescore(small, -1.0, 1, [[45, 45]], [0.9], [1]) == -1  # an invalid pair stays invalid
    # The first matching centre in list order is used (not the best one).
    assert _rescore(small, 0.6, 1, [[10, 10], [40, 40], [50, 50]], [1.0, 0.3, 0.9], [1, 1, 1]) == \
        pytest.approx((1.2 + 0.3) / 3)
    large = [0.0, 0.0, 200.0, 200.0]  # area 40000 > 22500: n = 5, region (80, 120)
    assert _rescore(large, 0.5, 0, [[85, 100]], [0.8], [0]) == pytest.approx((1.0 + 0.8) / 3)
    # (70, 100) is inside the n = 3 region (66.7, 133.3) but not inside the n = 5 one.
    assert _rescore(large, 0.5, 0, [[70, 100]], [0.8], [0]) == -1
    edge = [0.0, 0.0, 150.0, 150.0]  # area exactly 22500: still n = 3, region (50, 100)
    assert _rescore(edge, 0.5, 0, [[55, 55]], [0.8], [0]) == pytest.approx((1.0 + 0.8) / 3)
    with pytest.raises(ValueError, match="odd"):
        central_region_rescore(torch.zeros(1, 1, 4), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long),
                               torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long),
                               region_n=(3, 4))


def test_pull_push_hand_computed():
    tl = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    br = torch.tensor([0.2, 0.6, 0.1])
    img = torch.tensor([0, 0, 1])
    pull, push = pull_push_loss(tl, br, img, num_images=3)
    # image 0: means 0.1, 0.8; pull 1/2 (0.01 + 0.01 + 0.04 + 0.04); push 1/(2*1) * 2 * (1 - 0.7).
    # image 1 (one object): pull 0.04 + 0.04, push 0. image 2: no object.
    torch.testing.assert_close(pull, torch.tensor((0.05 + 0.08) / 3))
    torch.testing.assert_close(push, torch.tensor(0.3 / 3))
    (pull + push).backward()
    assert torch.isfinite(tl.grad).all()
    p1, q1 = pull_push_loss(torch.tensor([0.3]), torch.tensor([0.3]), torch.tensor([0]), 1)
    assert float(p1) == 0 and float(q1) == 0  # one object: 0, not the authors' ~1
    p0, q0 = pull_push_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 2)
    assert float(p0) == 0 and float(q0) == 0
    with pytest.raises(ValueError):
        pull_push_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.long), 1)


def test_corner_and_centre_targets_hand_computed():
    boxes = torch.tensor([[4.0, 8.0, 40.0, 30.0], [10.0, 10.0, 10.0, 20.0]])  # the second is empty
    t = build_corner_targets(boxes, torch.tensor([1, 0]), 2, (64, 64), (16, 16), 0.3, "cornernet_fixed",
                             with_center=True, center_sigma_divisor=5.0)
    # ratio 16/64: corners (1, 2) and (10, 7.5); centre (5.5, 4.75).
    assert t["classes"].tolist() == [1]
    assert t["tl_index"].tolist() == [2 * 16 + 1] and t["br_index"].tolist() == [7 * 16 + 10]
    assert t["ct_index"].tolist() == [4 * 16 + 5]
    torch.testing.assert_close(t["tl_offset"], torch.tensor([[0.0, 0.0]]))
    torch.testing.assert_close(t["br_offset"], torch.tensor([[0.0, 0.5]]))
    torch.testing.assert_close(t["ct_offset"], torch.tensor([[0.5, 0.75]]))
    assert float(t["tl_heatmap"][1, 2, 1]) == 1 and float(t["br_heatmap"][1, 7, 10]) == 1
    assert float(t["ct_heatmap"][1, 4, 5]) == 1 and float(t["tl_heatmap"][0].sum()) == 0
    # Radius from (ceil(5.5), ceil(9)) = (6, 9) with the fixed formula at IoU 0.3 (the smallest root).
    h, w, o = 6.0, 9.0, 0.3
    r1 = ((h + w) - math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) - math.sqrt(4 * (h + w) ** 2 - 16 * (1 - o) * w * h)) / 8
    r3 = (-2 * o * (h + w) + math.sqrt(4 * o * o * (h + w) ** 2 - 16 * o * (o - 1) * w * h)) / (8 * o)
    r = int(min(r1, r2, r3))
    assert r >= 1
    sigma_c, sigma_k = (2 * r + 1) / 6, (2 * r + 1) / 5
    assert float(t["tl_heatmap"][1, 2, 2]) == pytest.approx(math.exp(-1 / (2 * sigma_c ** 2)), rel=1e-5)
    assert float(t["ct_heatmap"][1, 4, 6]) == pytest.approx(math.exp(-1 / (2 * sigma_k ** 2)), rel=1e-5)
    assert float(t["tl_heatmap"][1, 2, 1 + r + 1]) == 0
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_corner_targets(boxes, torch.tensor([1, 5]), 2, (64, 64), (16, 16))


def test_cornernet_crop_window_is_input_size_times_scale():
    np.random.seed(3)
    aug = CornerNetRandomCrop((100, 100), scales=(0.5,), border=16)
    img = np.zeros((200, 300, 3), np.uint8)
    tfm = aug.get_transform(img)
    np.random.seed(3)
    np.random.choice((0.5,))
    ctx = np.random.randint(16, 300 - 16)
    cty = np.random.randint(16, 200 - 16)
    # window 50x50 around (ctx, cty), resized x2: x -> (x - ctx + 25) * 2
    box = tfm.apply_box(np.array([[ctx - 10.0, cty - 5.0, ctx + 20.0, cty + 25.0]]))[0]
    np.testing.assert_allclose(box, [30.0, 40.0, 90.0, 100.0])
    assert tfm.apply_image(img).shape == (100, 100, 3)
    full = CornerNetRandomCrop((100, 100), random_crop=False).get_transform(img)
    np.testing.assert_allclose(full.apply_box(np.array([[0.0, 0.0, 300.0, 200.0]]))[0],
                               [0.0, (150 - 100) / 3.0, 100.0, (150 + 100) / 3.0])


# ---------------------------------------------------------------------------------------------
def _tiny_cfg(arch="CornerNet", backbone="build_hourglass_backbone"):
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.DEVICE = "cpu"
    h = cfg.MODEL.HOURGLASS
    h.NUM_STACKS, h.DIMS, h.MODULES, h.PRE_CHANNELS, h.CNV_DIM = 2, [16, 16, 24], [1, 1, 1], 8, 16
    c = cfg.MODEL.CORNERNET
    c.NUM_CLASSES, c.POOL_CHANNELS, c.HEAD_CONV, c.TOPK, c.NUM_DETS = 3, 8, 16, 10, 50
    if arch == "CenterNetTriplets":
        c.GAUSSIAN_RADIUS_VARIANT, c.MIN_OVERLAP, c.OUTSIDE_BORDER = "cornernet_bug", 0.7, 5.0
    return cfg


def _instances(boxes, classes, size=(64, 64)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


@pytest.mark.parametrize("arch,backbone", [("CornerNet", "build_hourglass_backbone"),
                                           ("CornerNet", "build_squeeze_hourglass_backbone"),
                                           ("CenterNetTriplets", "build_hourglass_backbone")])
def test_detector_trains_with_and_without_boxes_and_predicts(arch, backbone):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(arch, backbone))
    model.train()
    img = lambda: torch.rand(3, 64, 64) * 255  # noqa: E731
    losses = model([{"image": img(), "instances": _instances([[4, 5, 30, 40], [20, 10, 60, 50]], [0, 2])},
                    {"image": img(), "instances": _instances([], [])}])
    assert set(losses) == {"loss_heatmap", "loss_pull", "loss_push", "loss_offset"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    empty = model([{"image": img(), "instances": _instances([], [])}])
    assert all(float(empty[k].detach()) == 0 for k in ("loss_pull", "loss_push", "loss_offset"))
    assert torch.isfinite(empty["loss_heatmap"]) and float(empty["loss_heatmap"]) > 0
    model.eval()
    out = model([{"image": torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8), "height": 100, "width": 140}])
    inst = out[0]["instances"]
    assert inst.image_size == (100, 140) and len(inst) <= 100
    if len(inst):
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 140).all() and torch.all(inst.scores[:-1] >= inst.scores[1:])
    with pytest.raises(ValueError, match="one size"):
        model.train()
        model([{"image": img(), "instances": _instances([], [])},
               {"image": torch.rand(3, 32, 64), "instances": _instances([], [], (32, 64))}])


def test_test_input_geometry_maps_boxes_back_like_the_authors():
    model = build_model(_tiny_cfg()).eval()  # size divisibility 4 * 2^2 = 16 -> pad to h | 15
    batch, (nh, nw), (top, left) = model._test_input(torch.zeros(3, 50, 70, dtype=torch.uint8), 1.0)
    assert batch.shape[-2:] == (50 | 15, 70 | 15) == (63, 79)
    assert (top, left) == (63 // 2 - 25, 79 // 2 - 35)
    # Pixels of the padding are black in pixel space.
    torch.testing.assert_close(batch[0, :, 0, 0], (-model.pixel_mean / model.pixel_std).flatten())

    # A model whose decoded box is known: map back by ratio W_out / W_in (16/63, 20/79) and the padding.
    out_h, out_w = (63 + 1) // 4, (79 + 1) // 4
    box = torch.tensor([4.0, 5.0, 10.0, 12.0])
    expected = torch.stack([box[0] * 79 / out_w - left, box[1] * 63 / out_h - top,
                            box[2] * 79 / out_w - left, box[3] * 63 / out_h - top])
    rx, ry = out_w / 79, out_h / 63
    got = box / torch.tensor([rx, ry, rx, ry]) - torch.tensor([left, top, left, top], dtype=torch.float32)
    torch.testing.assert_close(got, expected)


def test_flip_test_mirrors_boxes_in_output_pixels():
    model = build_model(_tiny_cfg()).eval()
    torch.manual_seed(0)
    img = torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8)
    model.flip_test = True
    both = model._run_scale(img, 1.0)
    model.flip_test = False
    single = model._run_scale(img, 1.0)
    d = single["boxes"].shape[0]
    torch.testing.assert_close(both["boxes"][:d], single["boxes"])  # original candidates first
    mirrored = model._run_scale(img.flip(-1), 1.0)
    # The flipped half equals the detections of the mirrored image, mirrored back (x' = W_out - x
    # in output pixels; here the centred padding is symmetric: 48 | 15 = 63, left = 7 = right - 1).
    assert both["boxes"].shape[0] == 2 * d
    torch.testing.assert_close(both["scores"][d:], mirrored["scores"])


# ---------------------------------------------------------------------------------------------
COUNTS = {"cornernet.hg104": 201_035_212, "cornernet_squeeze": 31_771_852,
          "centernet_triplets.hg52": 104_844_152, "centernet_triplets.hg104": 210_062_960}


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts_equal_the_authors_models(name):
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    with torch.device("meta"):  # shapes only: no 800 MB allocation
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name]
    path = STATE_DICTS / f"{name}.json"
    if path.is_file():
        layout = json.loads(path.read_text())
        theirs = sum(math.prod(s) for k, s in layout.items()
                     if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        assert theirs == COUNTS[name]
