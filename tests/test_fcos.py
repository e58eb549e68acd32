"""FCOS and the shared dense-head parts: targets, IoU losses, FPN P6/P7 variants, post-processing,
and the FCOS model on tiny inputs (hand-computed values; FCOS paper Sec. 3, AdelaiDet fcos_outputs.py)."""
from __future__ import annotations

import math

import pytest
import torch

from common.assigners import FCOS_INF, centerness_targets, fcos_size_ranges, fcos_targets
from common.config import get_cfg
from common.losses import iou_loss
from common.modeling import build_model
from common.modeling.backbone.fpn import LastLevelP6P7
from common.modeling.dense_head import Scale, build_dense_tower, compute_locations, pad_gt_instances
from common.modeling.dense_postprocess import dense_detection_postprocess
from common.structures import Boxes, Instances
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config


def _gt(boxes, classes):
    boxes = torch.tensor(boxes, dtype=torch.float32).view(1, -1, 4)
    classes = torch.tensor(classes, dtype=torch.int64).view(1, -1)
    return boxes, classes, torch.ones_like(classes, dtype=torch.bool)


def _pos_xy(labels, locs, k):
    return {tuple(p) for p in locs[labels[0] != k].tolist()}


def test_locations_are_cell_centres_or_corners():
    loc = compute_locations(2, 3, 8)
    assert loc.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert compute_locations(1, 2, 16, offset=0.0).tolist() == [[0, 0], [16, 0]]


def test_fcos_centre_sampling_region_is_clipped_and_strict():
    # One 8x8 level of stride 8 (centres 4..60); GT (0,0,48,48), centre 24: the region 24 +- 12 keeps
    # x, y in (12, 36) strictly, i.e. {20, 28}: 4 positives. Without sampling: (0, 48) -> 6 x 6.
    loc = compute_locations(8, 8, 8)
    boxes, classes, valid = _gt([[0, 0, 48, 48]], [2])
    labels, _, _ = fcos_targets([loc], [8], [(-1, FCOS_INF)], boxes, classes, valid, 3, 1.5)
    assert _pos_xy(labels, loc, 3) == {(20, 20), (28, 20), (20, 28), (28, 28)}
    assert set(labels[0].tolist()) == {2, 3}
    labels, _, _ = fcos_targets([loc], [8], [(-1, FCOS_INF)], boxes, classes, valid, 3, 0.0)
    assert int((labels != 3).sum()) == 36


def test_fcos_size_ranges_are_inclusive_per_level():
    # Level 0 (stride 8) takes max(l,t,r,b) in [-1, 28]: only x, y in {20, 28} (max exactly 28
    # included); level 1 (stride 16, centres 8, 24, 40) takes [28, INF]: all inner 3x3 but (24, 24).
    l0, l1 = compute_locations(8, 8, 8), compute_locations(4, 4, 16)
    boxes, classes, valid = _gt([[0, 0, 48, 48]], [0])
    labels, reg, _ = fcos_targets([l0, l1], [8, 16], [(-1, 28), (28, FCOS_INF)], boxes, classes, valid, 1, 0.0)
    pos0 = _pos_xy(labels[:, :64], l0, 1)
    pos1 = _pos_xy(labels[:, 64:], l1, 1)
    assert pos0 == {(20, 20), (28, 20), (20, 28), (28, 28)}
    assert pos1 == {(8, 8), (24, 8), (40, 8), (8, 24), (40, 24), (8, 40), (24, 40), (40, 40)}
    # Regression targets in stride units: (20, 20) on level 0 -> (20, 20, 28, 28) / 8.
    i = l0.tolist().index([20, 20])
    assert reg[0, i].tolist() == pytest.approx([2.5, 2.5, 3.5, 3.5])
    assert fcos_size_ranges([64, 128]) == [(-1, 64), (64, 128), (128, FCOS_INF)]


def test_fcos_min_area_rule_and_centerness():
    loc = compute_locations(8, 8, 8)
    # A (0,0,48,48) class 0 and the smaller B (16,16,40,40) class 1; C == A in size (tie: first wins).
    boxes, classes, valid = _gt([[0, 0, 48, 48], [16, 16, 40, 40], [0, 0, 48, 48]], [0, 1, 2])
    labels, reg, matched = fcos_targets([loc], [8], [(-1, FCOS_INF)], boxes, classes, valid, 3, 0.0, False)
    at = {tuple(p): i for i, p in enumerate(loc.tolist())}
    assert labels[0, at[(20, 20)]] == 1 and matched[0, at[(20, 20)]] == 1  # inside A, B, C: B is smallest
    assert labels[0, at[(4, 4)]] == 0 and matched[0, at[(4, 4)]] == 0  # A and C tie: A (first)
    assert labels[0, at[(52, 52)]] == 3 and matched[0, at[(52, 52)]] == -1
    # Centerness of (20, 20) w.r.t. B: l=t=4, r=b=20 -> sqrt(4/20 * 4/20) = 0.2; w.r.t. A (12, 4):
    # l=12, t=4, r=36, b=44 -> sqrt(12/36 * 4/44).
    assert reg[0, at[(20, 20)]].tolist() == [4, 4, 20, 20]
    ctr = centerness_targets(torch.stack([reg[0, at[(20, 20)]], reg[0, at[(12, 4)]]]))
    assert ctr.tolist() == pytest.approx([0.2, math.sqrt(12 / 36 * 4 / 44)])


def test_fcos_targets_empty_image_and_padding():
    loc = compute_locations(4, 4, 8)
    inst = [Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long)),
            Instances((32, 32), gt_boxes=Boxes(torch.tensor([[0.0, 0, 32, 32]])), gt_classes=torch.tensor([1]))]
    boxes, classes, valid = pad_gt_instances(inst, torch.device("cpu"), 2)
    assert boxes.shape == (2, 1, 4) and valid.tolist() == [[False], [True]]
    labels, _, _ = fcos_targets([loc], [8], [(-1, FCOS_INF)], boxes, classes, valid, 2, 1.5)
    assert (labels[0] == 2).all() and (labels[1] == 1).any()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        pad_gt_instances(inst, torch.device("cpu"), 1, "NUM_CLASSES")


def test_iou_loss_fcos_conventions():
    pred = torch.tensor([[1.0, 1, 1, 1], [2, 1, 0, 0]])
    target = torch.tensor([[2.0, 2, 2, 2], [0, 0, 1, 1]])
    # Pair 0: I = 4, U = 16, C = 16. Pair 1: disjoint, I = 0, U = 3, C = 3 * 2 = 6.
    giou = iou_loss(pred, target, loss_type="giou", smooth=True, reduction="none")
    assert giou.tolist() == pytest.approx([1 - 5 / 17, 1 - 1 / 4 + 3 / 6])
    assert iou_loss(pred, target, loss_type="giou", smooth=False, reduction="none").tolist() == pytest.approx(
        [1 - 4 / 16, 1.5])
    assert float(iou_loss(pred[:1], target[:1], loss_type="iou")) == pytest.approx(-math.log(5 / 17))
    assert float(iou_loss(pred[:1], target[:1], loss_type="linear_iou", smooth=False)) == pytest.approx(0.75)
    w = torch.tensor([0.5, 2.0])
    assert float(iou_loss(pred, target, w)) == pytest.approx(0.5 * (12 / 17) + 2 * 1.25)
    assert float(iou_loss(torch.zeros(0, 4), torch.zeros(0, 4))) == 0.0
    with pytest.raises(ValueError, match="loss_type"):
        iou_loss(pred, target, loss_type="diou")


@pytest.mark.parametrize("relu", [True, False])
def test_p6p7_relu_variant(relu):
    block = LastLevelP6P7(1, 1, in_feature="p5", relu_before_p7=relu)
    with torch.no_grad():
        block.p6.weight.zero_()
        block.p6.bias.fill_(-1.0)  # p6 = -1 everywhere
        block.p7.weight.zero_()
        block.p7.weight[0, 0, 1, 1] = 1.0  # p7 = centre tap of its input
        block.p7.bias.zero_()
    p6, p7 = block(torch.randn(1, 1, 8, 8))
    assert p6.shape[-2:] == (4, 4) and p7.shape[-2:] == (2, 2)
    assert (p6 == -1).all()
    assert (p7 == (0.0 if relu else -1.0)).all()


def _tiny_cfg(*opts):
    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    cfg.merge_from_file("projects/FCOS_VFNet/configs/fcos.bccd.res18.yaml")
    cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", "64", *opts])
    return cfg


@pytest.mark.parametrize("source,channels", [("p5", 64), ("res5", 512)])
def test_fpn_top_block_source(source, channels):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg("MODEL.FPN.TOP_BLOCK_IN_FEATURE", source))
    sd = model.state_dict()
    assert sd["backbone.top_block.p6.weight"].shape == (64, channels, 3, 3)
    assert model.backbone.top_block.in_feature == source
    assert [s.stride for s in model.backbone.output_shape().values()] == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="TOP_BLOCK_IN_FEATURE"):
        build_model(_tiny_cfg("MODEL.FPN.TOP_BLOCK_IN_FEATURE", "p4"))


def test_dense_tower_layout_and_scale():
    tower = build_dense_tower(32, 2, conv_bias=False, deformable_last=True)
    keys = sorted(tower.state_dict())
    assert keys == ["0.weight", "1.bias", "1.weight", "3.conv_offset.bias", "3.conv_offset.weight", "3.weight",
                    "4.bias", "4.weight"]
    assert not tower[3].conv_offset.weight.detach().any()
    x = torch.randn(1, 32, 5, 5)
    assert tower(x).shape == (1, 32, 5, 5)
    s = Scale(2.0)
    assert s.scale.shape == (1,) and torch.equal(s(torch.ones(3)), torch.full((3,), 2.0))


def test_dense_postprocess_orders_threshold_and_topk():
    boxes = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 11]])]
    # Location 2 overlaps location 0 (IoU 10/11).
    scores = [torch.tensor([[0.9, 0.0], [0.3, 0.8], [0.85, 0.7]])]
    th = [torch.tensor([[0.9, 0.0], [0.04, 0.8], [0.85, 0.7]])]
    # "pairs", top-2 of the candidates (threshold on th > 0.05): (0, c0) 0.9, (2, c0) 0.85.
    r = dense_detection_postprocess(boxes, scores, (40, 40), score_thresh=0.05, topk_candidates=2,
                                    nms_thresh=0.6, threshold_scores=th)
    # (2, c0) is suppressed by (0, c0) (same class, IoU > 0.6).
    assert r.scores.tolist() == pytest.approx([0.9]) and r.pred_classes.tolist() == [0]
    # "locations": top-2 locations by max score (0: 0.9, 2: 0.85), then all their pairs > 0.05.
    r = dense_detection_postprocess(boxes, scores, (40, 40), score_thresh=0.05, topk_candidates=2,
                                    nms_thresh=0.6, threshold_scores=th, topk_mode="locations")
    assert r.scores.tolist() == pytest.approx([0.9, 0.7]) and r.pred_classes.tolist() == [0, 1]
    # No top-k: (1, c0) fails the threshold (0.04) though its score is 0.3; class-aware NMS; clipping.
    r = dense_detection_postprocess(boxes, scores, (25, 25), score_thresh=0.05, topk_candidates=0,
                                    nms_thresh=0.6, threshold_scores=th, max_detections=3)
    assert r.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert r.pred_boxes.tensor[1].tolist() == [20, 20, 25, 25]
    with pytest.raises(ValueError, match="topk_mode"):
        dense_detection_postprocess(boxes, scores, (9, 9), topk_mode="all")


def _batch(empty_last=True):
    out = []
    for h, w in [(64, 96), (60, 80)]:
        inst = Instances((h, w), gt_boxes=Boxes(torch.tensor([[4.0, 8, 40, 50], [30, 20, 70, 58]])),
                         gt_classes=torch.tensor([0, 2]))
        out.append({"image": torch.rand(3, h, w) * 255, "instances": inst})
    if empty_last:
        inst = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
        out.append({"image": torch.rand(3, 64, 64) * 255, "instances": inst})
    return out


@pytest.mark.parametrize("variant", [[], ["MODEL.FCOS.NORM_REG_TARGETS", "False", "MODEL.FCOS.CENTERNESS_ON_REG",
                                          "False", "MODEL.FCOS.CENTER_SAMPLE", "False",
                                          "MODEL.FCOS.LOC_LOSS_TYPE", "iou"]])
def test_fcos_model_trains_and_infers(variant):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(*variant))
    losses = model(_batch())
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    # An image without objects: finite losses, no positives (zero box and centerness losses).
    empty = model(_batch()[2:])
    assert torch.isfinite(empty["loss_fcos_cls"]) and float(empty["loss_fcos_loc"]) == 0.0
    assert float(empty["loss_fcos_ctr"]) == 0.0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192}])
    inst = out[0]["instances"]
    assert inst.image_size == (128, 192) and len(inst) <= 100


def test_fcos_bad_config_names_key():
    with pytest.raises(NotImplementedError, match="BOX_QUALITY"):
        build_model(_tiny_cfg("MODEL.FCOS.BOX_QUALITY", "iou"))
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        build_model(_tiny_cfg("MODEL.FCOS.SIZES_OF_INTEREST", "[64, 128]"))
