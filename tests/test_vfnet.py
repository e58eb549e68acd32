"""VarifocalNet: varifocal loss (paper Eq. 2), star-shaped deformable sampling (Sec. 3.3) and the
VFNet detector on tiny inputs."""
from __future__ import annotations

import math

import pytest
import torch

from common.config import get_cfg
from common.layers import DeformConv
from common.losses import varifocal_loss
from common.modeling import build_model
from common.structures import Boxes, Instances
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config, star_dcn_offset


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_varifocal_loss_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    q = torch.tensor([[0.5, 0.0], [0.0, 0.9]])
    # Positives: -q (q log p + (1 - q) log(1 - p)) weighted by q. Negatives: -0.75 p^2 log(1 - p).
    pos1 = 0.5 * math.log(2.0)  # p = 0.5, q = 0.5: BCE = log 2
    p = _sigmoid(0.5)
    pos2 = 0.9 * -(0.9 * math.log(p) + 0.1 * math.log(1 - p))
    neg1 = 0.75 * _sigmoid(2.0) ** 2 * math.log(1 + math.exp(2.0))
    neg2 = 0.75 * _sigmoid(-1.0) ** 2 * math.log(1 + math.exp(-1.0))
    assert float(varifocal_loss(logits, q)) == pytest.approx(pos1 + pos2 + neg1 + neg2, rel=1e-6)
    none = varifocal_loss(logits, q, reduction="none")
    assert none[0, 0].item() == pytest.approx(pos1) and none[0, 1].item() == pytest.approx(neg1, rel=1e-6)
    # iou_weighted=False: positives weighted by 1.
    assert varifocal_loss(logits, q, iou_weighted=False, reduction="none")[0, 0].item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="shape"):
        varifocal_loss(logits, q[:1])


def test_star_offsets_sample_exactly_the_nine_star_points():
    # Box distances (16, 8, 24, 32) px at stride 8 -> (l', t', r', b') = (2, 1, 3, 4) cells: from
    # the cell (row 5, col 5) the taps must read rows (4, 5, 9) x cols (3, 5, 8).
    h = w = 12
    feat = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)  # value = row * w + col
    ltrb = torch.tensor([16.0, 8, 24, 32]).view(1, 4, 1, 1).expand(1, 4, h, w)
    offset = star_dcn_offset(ltrb, stride=8)
    assert offset.shape == (1, 18, h, w)
    conv = DeformConv(1, 1, 3, padding=1)
    expected = [(r, c) for r in (4, 5, 9) for c in (3, 5, 8)]
    for tap, (r, c) in enumerate(expected):
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight.view(-1)[tap] = 1.0  # the conv reads one tap only
        out = conv(feat, offset)
        assert out[0, 0, 5, 5].item() == r * w + c, f"tap {tap}"


def test_non_finite_offsets_sample_zero_and_finite_ones_are_kept():
    from projects.FCOS_VFNet.fcos_vfnet.vfnet import bound_offsets

    feat = torch.ones(1, 1, 6, 6)
    offset = torch.zeros(1, 18, 6, 6)
    offset[:, :, 2, 2] = float("nan")
    offset[:, :, 3, 3] = float("inf")
    offset[:, 0, 4, 4] = -1e30
    conv = DeformConv(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        out = conv(feat, bound_offsets(offset))
    assert out[0, 0, 2, 2] == 0 and out[0, 0, 3, 3] == 0 and out[0, 0, 4, 4] == 8  # one tap off the map
    assert out[0, 0, 1, 1] == 9
    finite = torch.randn(1, 18, 6, 6)
    assert torch.equal(bound_offsets(finite), finite)


def test_star_offset_gradient_multiplier():
    ltrb = torch.full((1, 4, 2, 2), 16.0, requires_grad=True)
    star_dcn_offset(ltrb, stride=8, gradient_mul=0.1)[:, 1].sum().backward()  # channel 1 = -l'
    assert torch.allclose(ltrb.grad[:, 0], torch.full((1, 2, 2), -0.1 / 8))
    assert ltrb.grad[:, 1:].abs().sum() == 0


def _cfg(*opts):
    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    cfg.merge_from_file("projects/FCOS_VFNet/configs/vfnet.bccd.res18.yaml")
    cfg.merge_from_list(list(opts))
    return cfg


def _batch():
    inst = Instances((64, 96), gt_boxes=Boxes(torch.tensor([[4.0, 8, 40, 50], [30, 20, 70, 58]])),
                     gt_classes=torch.tensor([0, 2]))
    empty = Instances((64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    return [{"image": torch.rand(3, 64, 96) * 255, "instances": inst},
            {"image": torch.rand(3, 64, 64) * 255, "instances": empty}]


@pytest.mark.parametrize("opts", [[], ["MODEL.VFNET.USE_ATSS", "False", "MODEL.VFNET.DCN_ON_LAST_CONV", "True"]])
def test_vfnet_model_trains_on_empty_images_and_infers(opts):
    torch.manual_seed(0)
    model = build_model(_cfg(*opts))
    losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_bbox_refine"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0
    only_empty = model(_batch()[1:])
    assert torch.isfinite(only_empty["loss_cls"]) and float(only_empty["loss_bbox"]) == 0.0
    assert float(only_empty["loss_bbox_refine"]) == 0.0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255}])
    assert out[0]["instances"].image_size == (64, 96)


def test_vfnet_reg_denoms_and_bad_norm_type():
    model = build_model(_cfg())
    assert model.reg_denoms == [64.0, 128.0, 256.0, 512.0, 1024.0]
    with pytest.raises(ValueError, match="BBOX_NORM_TYPE"):
        build_model(_cfg("MODEL.VFNET.BBOX_NORM_TYPE", "size"))
