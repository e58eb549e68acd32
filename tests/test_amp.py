"""Mixed precision: matcher costs, box decoding and losses stay float32 under ``torch.autocast``.

Also the hand-computed behaviour of ``common.modeling.box_regression`` (detectron2 v0.6 API).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from common.config import get_cfg
from common.modeling import Box2BoxTransform, Box2BoxTransformLinear
from common.modeling.box_regression import _DEFAULT_SCALE_CLAMP
from common.structures import Boxes, Instances


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


# --------------------------------------------------------------------------- matcher costs
def _confident_outputs(dtype):
    # 3 predictions x 2 classes: logits of +-20 are exact in float16; sigmoid(20) rounds to 1 there,
    # so the authors' -log(1 - p + 1e-8) is -log(0) = inf in float16.
    logits = torch.tensor([[[20.0, -20.0], [-20.0, 20.0], [-20.0, -20.0]]], dtype=dtype)
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [5.0, 5.0, 15.0, 15.0]]], dtype=dtype)
    target = {
        "labels": torch.tensor([1, 0]),
        "boxes_xyxy": torch.tensor([[20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 10.0, 10.0]]),
        "image_size_xyxy": torch.tensor([64.0, 64.0, 64.0, 64.0]),
    }
    return {"pred_logits": logits, "pred_boxes": boxes}, [target]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hungarian_matcher_float16_confident_logits_returns_a_match(dtype):
    from common.assigners import HungarianMatcher

    outputs, targets = _confident_outputs(dtype)
    (pi, gi), = HungarianMatcher()(outputs, targets)
    assert pi.tolist() == [0, 1] and gi.tolist() == [1, 0]  # each GT to its box-and-class twin
    with torch.autocast("cpu", dtype=dtype):
        (pi2, gi2), = HungarianMatcher()(outputs, targets)
    assert pi2.tolist() == [0, 1] and gi2.tolist() == [1, 0]


@pytest.mark.parametrize("mode", ["hungarian", "argmin"])
def test_min_cost_matcher_float16_confident_logits_returns_a_match(mode):
    from common.assigners import MinCostMatcher

    outputs, targets = _confident_outputs(torch.float16)
    m = MinCostMatcher(mode=mode)
    cost = m.cost_matrix(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"],
                         targets[0]["boxes_xyxy"], targets[0]["image_size_xyxy"])
    assert cost.dtype == torch.float32 and torch.isfinite(cost).all()
    (li, gi), = m(outputs, targets)
    assert sorted(zip(gi.tolist(), li.tolist())) == [(0, 1), (1, 0)]


def test_focal_cost_logsigmoid_form_is_exact_and_float32():
    from common.losses import focal_classification_cost

    x = torch.tensor([[20.0], [-20.0], [0.0]])
    cost = focal_classification_cost(x.half(), torch.tensor([0]))
    assert cost.dtype == torch.float32 and torch.isfinite(cost).all()
    # x = 20: pos ~ 0.25 * e^-40 * 2e-9 ~ 0, neg = 0.75 * 1 * softplus(20) = 0.75 * 20 (eps form: 0.75 * 18.42)
    assert cost[0, 0].item() == pytest.approx(-0.75 * 20.0, rel=1e-6)
    # x = -20: pos = 0.25 * 1 * 20, neg ~ 0
    assert cost[1, 0].item() == pytest.approx(0.25 * 20.0, rel=1e-6)
    assert cost[2, 0].item() == pytest.approx(0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2), rel=1e-6)


def test_losses_are_float32_for_half_inputs():
    from common.losses import giou_loss, sigmoid_focal_loss
    from common.losses.heatmap_focal import clamped_sigmoid, heatmap_focal_loss

    logits = torch.tensor([[3.0, -2.0], [0.5, 12.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ref = sigmoid_focal_loss(logits, t, reduction="sum")
    half = sigmoid_focal_loss(logits.bfloat16(), t, reduction="sum")
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=1e-2, atol=0)  # logits exact in bf16 up to 8 bits
    # Pixel boxes of 300 x 300 px: areas 9e4 overflow float16 (max 65504) unless upcast.
    b1 = torch.tensor([[0.0, 0.0, 300.0, 300.0]])
    b2 = torch.tensor([[100.0, 0.0, 400.0, 300.0]])
    g = giou_loss(b1.half(), b2.half())
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, torch.tensor([1 - 0.5]))  # IoU 6e4/12e4, hull = union
    # bfloat16 rounds 1 - 1e-4 to 1: the clamp must run in float32 for log(1 - p) to stay finite.
    p = clamped_sigmoid(torch.tensor([[[[30.0]]]], dtype=torch.bfloat16))
    assert p.dtype == torch.float32 and p.item() == pytest.approx(1 - 1e-4)
    assert torch.isfinite(heatmap_focal_loss(p, torch.zeros(1, 1, 1, 1)))


# --------------------------------------------------------------------------- heads: float32 decoding
def test_onenet_grid_points_stay_exact_under_bfloat16_autocast():
    """Stride-4 grid x = 4j + 2: 786, 790, 794 (j = 196..198) round to 784/792/792 in bfloat16."""
    from projects.OneNet.onenet.head import ltrb_to_boxes

    ltrb = torch.zeros(1, 4, 1, 200, dtype=torch.bfloat16)
    ltrb[0, :, 0, 196] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        boxes = ltrb_to_boxes(ltrb, 4)
    assert boxes.dtype == torch.float32
    assert boxes[0, 196:199, 0].tolist() == [785.0, 790.0, 794.0]  # x - l
    assert boxes[0, 196:199, 2].tolist() == [789.0, 790.0, 794.0]  # x + r
    torch.testing.assert_close(boxes, ltrb_to_boxes(ltrb.float(), 4), rtol=0, atol=0)


def test_sparsercnn_head_decodes_in_float32_under_autocast():
    from common.modeling.poolers import ROIPooler
    from projects.SparseRCNN.sparsercnn.head import RCNNHead

    torch.manual_seed(0)
    head = RCNNHead(d_model=16, num_classes=3, dim_feedforward=32, nhead=2, dim_dynamic=4, pooler_resolution=2)
    pooler = ROIPooler(2, (0.25,), 2, "ROIAlignV2")
    feats = [torch.randn(1, 16, 200, 200)]
    boxes = torch.tensor([[[770.0, 780.0, 790.0, 796.0], [100.0, 120.0, 300.0, 260.0]]])
    deltas = {}
    head.bboxes_delta.register_forward_hook(lambda m, i, o: deltas.setdefault("d", o))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, pred, _ = head(feats, boxes, torch.randn(1, 2, 16), pooler)
    d = deltas["d"]
    assert d.dtype == torch.bfloat16 and pred.dtype == torch.float32
    expected = head.box2box_transform.apply_deltas(d.float(), boxes[0])
    torch.testing.assert_close(pred[0], expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- detectors under autocast
# Tiny models on 64x64 images: ResNet-18 (stem 16 channels), narrow heads. Tolerance of the
# autocast losses against float32 with the same weights and inputs, per loss term:
# |amp - fp32| <= AMP_RTOL * |fp32| + AMP_ATOL (measured: max relative difference 2.0e-3 in
# bfloat16 and 1.4e-3 in float16 for Sparse R-CNN, 1.5e-3 / 5e-4 for OneNet).
AMP_RTOL, AMP_ATOL = 1e-2, 1e-3
_ROOT = Path(__file__).resolve().parents[1] / "projects"


def _sparsercnn_cfg():
    from projects.SparseRCNN.sparsercnn import add_sparsercnn_config

    cfg = get_cfg()
    add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(_ROOT / "SparseRCNN" / "configs" / "Base-SparseRCNN.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SparseRCNN.HIDDEN_DIM", "32",
        "MODEL.SparseRCNN.DIM_FEEDFORWARD", "64", "MODEL.SparseRCNN.DIM_DYNAMIC", "8",
        "MODEL.SparseRCNN.NHEADS", "4", "MODEL.SparseRCNN.NUM_PROPOSALS", "10",
        "MODEL.SparseRCNN.NUM_HEADS", "2", "MODEL.SparseRCNN.NUM_CLASSES", "3",
    ])
    return cfg


def _onenet_cfg():
    from projects.OneNet.onenet import add_onenet_config

    cfg = get_cfg()
    add_onenet_config(cfg)
    cfg.merge_from_file(str(_ROOT / "OneNet" / "configs" / "onenet.bccd.res18.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
                         "MODEL.OneNet.DECONV_CHANNEL", "[512, 32, 32, 32]"])
    return cfg


def _batch():
    """Two 64x64 images: two GTs, and one image without any box."""
    g = torch.Generator().manual_seed(0)
    out = []
    for boxes, classes in [([[4.0, 6.0, 30.0, 40.0], [36.0, 10.0, 60.0, 60.0]], [0, 2]), ([], [])]:
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        out.append({"image": torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8), "instances": inst})
    return out


_DETECTORS = {"SparseRCNN": _sparsercnn_cfg, "OneNet": _onenet_cfg}


@pytest.fixture(scope="module", params=sorted(_DETECTORS))
def tiny_detector(request):
    from common.modeling import build_model

    torch.manual_seed(0)
    return request.param, build_model(_DETECTORS[request.param]()).train()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_detector_losses_under_autocast_equal_float32(tiny_detector, dtype):
    name, model = tiny_detector
    ref = model(_batch())
    with torch.autocast("cpu", dtype=dtype):
        amp = model(_batch())
    assert set(amp) == set(ref)
    for k, v in amp.items():
        assert v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v), (name, k, v)
        tol = AMP_RTOL * abs(ref[k].item()) + AMP_ATOL
        assert abs(v.item() - ref[k].item()) <= tol, (name, dtype, k, v.item(), ref[k].item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_detector_trains_two_steps_with_amp_trainer(tiny_detector, dtype):
    import copy

    from common.engine.train_loop import AMPTrainer

    name, model = tiny_detector
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    # float16 needs loss scaling; GradScaler's default initial scale 2^16 overflows the float16
    # gradients of the first steps (those steps are skipped, by design), so 2 steps start at 2^8.
    # (After one AdamW step the random Sparse R-CNN's last-stage boxes are ~1e5 px wide, and the
    # L1 gradient through exp(dw) overflows float16 even unscaled: the scaler then skips step 2.)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if dtype == torch.float16 else None
    trainer = AMPTrainer(model, [_batch(), _batch()], opt, grad_scaler=scaler, precision=dtype)
    assert trainer.precision == dtype and trainer.device_type == "cpu"
    assert trainer.grad_scaler.is_enabled() == (dtype == torch.float16)
    trainer.train(0, 2)
    total = trainer.storage.history("total_loss").values()
    assert len(total) == 2 and all(math.isfinite(v) for v, _ in total), (name, total)
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), f"{name}: no parameter moved"

