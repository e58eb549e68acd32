"""ATSS assigner on hand-made anchors and GTs (Zhang et al. CVPR 2020, Algorithm 1; mmdet
atss_assigner.py) and the ATSS detector on tiny inputs."""
from __future__ import annotations

import statistics

import pytest
import torch

from common.assigners import ATSSAssigner, pairwise_iou_batched
from common.config import get_cfg
from common.modeling import build_model
from common.structures import Boxes, Instances
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config

# Level 0: four 10x10 anchors along x (centres 5, 15, 25, 35); level 1: two 20x20 (centres 10, 30).
L0 = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]])
L1 = torch.tensor([[0.0, 0, 20, 20], [20, 0, 40, 20]])
A = [2.0, 0, 14, 10]  # centre (8, 5): candidates l0 {0, 1, 2} (top-3 by distance), l1 {0, 1}
G = [0.0, 0, 10, 12]


def _assign(gts, topk=3, anchor_valid=None):
    boxes = torch.tensor(gts, dtype=torch.float32).view(1, -1, 4)
    valid = torch.ones(boxes.shape[:2], dtype=torch.bool)
    return ATSSAssigner(topk)([L0, L1], boxes, valid, anchor_valid)[0].tolist()


def test_iou_matrix():
    ious = pairwise_iou_batched(torch.cat([L0, L1]), torch.tensor([[A]]))[0, :, 0]
    assert ious.tolist() == pytest.approx([80 / 140, 40 / 180, 0, 0, 120 / 400, 0])


def test_mean_plus_std_threshold():
    # Candidate IoUs of A: l0 anchors 0, 1, 2 and l1 anchors 0, 1.
    cand = [80 / 140, 40 / 180, 0.0, 120 / 400, 0.0]
    thr = statistics.mean(cand) + statistics.stdev(cand)  # 0.2187 + 0.2381 = 0.4568
    assert 120 / 400 < thr < 80 / 140
    # Only anchor 0 (IoU 0.571) passes; l1 anchor 0 (0.3) and l0 anchor 1 (0.22) do not.
    assert _assign([A]) == [0, -1, -1, -1, -1, -1]


def test_centre_must_be_inside_by_more_than_0_01():
    # Anchor 0 (centre x = 5) has IoU 0.5 with a GT ending at x = 5.005: above the threshold
    # (0.125 + 0.217) but its centre is only 0.005 inside, so it is not a positive; at 5.02 it is.
    cand = [50.05 / 100, 0.0, 0.0, 50.05 / 400, 0.0]
    assert cand[0] > statistics.mean(cand) + statistics.stdev(cand)
    assert _assign([[0.0, 0, 5.005, 10]]) == [-1] * 6
    assert _assign([[0.0, 0, 5.02, 10]]) == [0, -1, -1, -1, -1, -1]


def test_anchor_of_two_gts_goes_to_highest_iou_and_first_on_tie():
    # Anchor 0 is a positive of A (IoU 0.571) and of G (IoU 100/120 = 0.833; G's threshold
    # 0.227 + 0.363 = 0.590): G wins whatever the order. With two identical GTs the first wins.
    cand_g = [100 / 120, 0.0, 0.0, 120 / 400, 0.0]
    assert cand_g[0] > statistics.mean(cand_g) + statistics.stdev(cand_g)
    assert _assign([A, G])[0] == 1
    assert _assign([G, A])[0] == 0
    assert _assign([A, A])[0] == 0


def test_batched_padding_and_invalid_anchors():
    boxes = torch.tensor([[A, [0, 0, 0, 0]], [G, A]], dtype=torch.float32)
    valid = torch.tensor([[True, False], [True, True]])
    out = ATSSAssigner(3)([L0, L1], boxes, valid)
    assert out[0].tolist() == [0, -1, -1, -1, -1, -1] and out[1].tolist() == [0, -1, -1, -1, -1, -1]
    # Anchor 0 outside the image's padded extent: never a candidate or positive.
    anchor_valid = torch.ones(2, 6, dtype=torch.bool)
    anchor_valid[:, 0] = False
    out = ATSSAssigner(3)([L0, L1], boxes, valid, anchor_valid)
    assert (out[:, 0] == -1).all()
    empty = ATSSAssigner(3)([L0, L1], torch.zeros(1, 1, 4), torch.zeros(1, 1, dtype=torch.bool))
    assert (empty == -1).all()


def _cfg(*opts):
    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    cfg.merge_from_file("projects/FCOS_VFNet/configs/atss.bccd.res18.yaml")
    cfg.merge_from_list(list(opts))
    return cfg


def test_atss_model_trains_on_empty_images_and_infers():
    torch.manual_seed(0)
    model = build_model(_cfg())
    assert not model.backbone.top_block.relu_before_p7  # mmdet ATSS: P7 = conv(P6)
    inst = Instances((64, 96), gt_boxes=Boxes(torch.tensor([[4.0, 8, 40, 50], [30, 20, 70, 58]])),
                     gt_classes=torch.tensor([0, 2]))
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    batch = [{"image": torch.rand(3, 64, 96) * 255, "instances": inst},
             {"image": torch.rand(3, 64, 64) * 255, "instances": empty}]
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    only_empty = model(batch[1:])
    assert torch.isfinite(only_empty["loss_cls"]) and float(only_empty["loss_bbox"]) == 0.0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255}])
    assert out[0]["instances"].image_size == (64, 96)
