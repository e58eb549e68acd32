"""Sparse R-CNN: dynamic conv maths, box decoding, criterion values, state-dict layout, train/eval."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.config import get_cfg
from projects.SparseRCNN.sparsercnn import add_sparsercnn_config
from projects.SparseRCNN.sparsercnn.head import DynamicConv, DynamicHead, RCNNHead
from projects.SparseRCNN.sparsercnn.loss import SetCriterion
from common.assigners import HungarianMatcher

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "SparseRCNN" / "configs"
STATE_DICT_JSON = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "state_dicts" / "sparsercnn.res50.100pro.3x.json"
)


def _cfg(name: str, *opts):
    cfg = get_cfg()
    add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


# ---------------------------------------------------------------- pure parts
def test_dynamic_conv_matches_manual_bmm():
    torch.manual_seed(0)
    d, dd, s = 8, 4, 3
    conv = DynamicConv(hidden_dim=d, dim_dynamic=dd, num_dynamic=2, pooler_resolution=s)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for ln in (conv.norm1, conv.norm2, conv.norm3):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.2, 0.2)
    pro = torch.randn(5, d)
    roi = torch.randn(5, s * s, d)
    out = conv(pro, roi)
    assert out.shape == (5, d)

    r = 3  # recompute proposal r by hand
    params = conv.dynamic_layer.weight @ pro[r] + conv.dynamic_layer.bias
    p1 = params[: d * dd].reshape(d, dd)
    p2 = params[d * dd :].reshape(dd, d)
    x = F.relu(F.layer_norm(roi[r] @ p1, (dd,), conv.norm1.weight, conv.norm1.bias))
    x = F.relu(F.layer_norm(x @ p2, (d,), conv.norm2.weight, conv.norm2.bias))
    flat = x.reshape(-1)  # spatial-major: index = bin * d + channel
    y = conv.out_layer.weight @ flat + conv.out_layer.bias
    expected = F.relu(F.layer_norm(y, (d,), conv.norm3.weight, conv.norm3.bias))
    torch.testing.assert_close(out[r], expected, rtol=1e-4, atol=1e-5)


def test_dynamic_conv_rejects_other_num_dynamic():
    with pytest.raises(ValueError, match="NUM_DYNAMIC=3"):
        DynamicConv(8, 4, num_dynamic=3)


def test_apply_deltas_hand_values():
    # The head decodes with detectron2's Box2BoxTransform, weights (2, 2, 1, 1), clamp log(1e5 / 16).
    t = RCNNHead(d_model=8, num_classes=2, dim_feedforward=8, nhead=2, dim_dynamic=4, pooler_resolution=2).box2box_transform
    assert t.weights == (2.0, 2.0, 1.0, 1.0) and t.scale_clamp == math.log(1e5 / 16)
    apply_deltas = t.apply_deltas
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.0, 4.0, 8.0, 6.0]])
    deltas = torch.tensor([[2.0, 2.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]])
    # box 0: centre (5, 10) + (dx=1)*10, (dy=1)*20 -> (15, 30); size (20, 20)
    expected = torch.tensor([[5.0, 20.0, 25.0, 40.0], [4.0, 4.0, 8.0, 6.0]])
    torch.testing.assert_close(apply_deltas(deltas, boxes), expected)
    huge = apply_deltas(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), boxes[:1])
    assert torch.isfinite(huge).all()  # dw/dh clamped at log(1e5 / 16)
    torch.testing.assert_close(huge[0, 2] - huge[0, 0], torch.tensor(10.0 * 1e5 / 16), rtol=1e-4, atol=0)


def _criterion(num_classes=2, deep=False):
    weights = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    return SetCriterion(num_classes, HungarianMatcher(), weights)


def _tgt(labels, boxes, w=20, h=10):
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes_xyxy": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "image_size_xyxy": torch.tensor([w, h, w, h], dtype=torch.float32),
    }


def test_set_criterion_hand_values():
    crit = _criterion()
    pred = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [10.0, 2.0, 18.0, 8.0]]], requires_grad=True)
    outputs = {"pred_logits": torch.zeros(1, 2, 2, requires_grad=True), "pred_boxes": pred}
    losses = crit(outputs, [_tgt([1], [[10.0, 2.0, 18.0, 8.0]])])
    pos, neg = 0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)  # focal at p = 0.5
    assert losses["loss_ce"].item() == pytest.approx(pos + 3 * neg, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)  # perfect box matched
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)

    # shifted by 2 px in x: L1 = 2 * 2/20 = 0.2; GIoU: IoU 36/60 = 0.6, hull = union -> loss 0.4
    outputs["pred_boxes"] = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [12.0, 2.0, 20.0, 8.0]]])
    losses = crit(outputs, [_tgt([1], [[10.0, 2.0, 18.0, 8.0]])])
    assert losses["loss_bbox"].item() == pytest.approx(0.2, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(0.4, rel=1e-5)


def test_set_criterion_no_gt_and_aux_suffixes():
    crit = _criterion(num_classes=3)
    logits = torch.zeros(2, 2, 3, requires_grad=True)
    boxes = torch.tensor([0.0, 0.0, 5.0, 5.0]).repeat(2, 2, 1).requires_grad_()
    outputs = {"pred_logits": logits, "pred_boxes": boxes,
               "aux_outputs": [{"pred_logits": logits * 1, "pred_boxes": boxes * 1}]}
    losses = crit(outputs, [_tgt([], []), _tgt([], [])])
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"}
    # num_boxes clamps to 1: every one of 2*2*3 logits is a negative at p = 0.5
    assert losses["loss_ce"].item() == pytest.approx(12 * 0.75 * 0.25 * math.log(2), rel=1e-5)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_prior_only_on_class_logits_bias():
    from common.modeling.poolers import ROIPooler

    # K = 4 equals bboxes_delta's out dim: the authors' heuristic would also overwrite its bias.
    head = DynamicHead(
        box_pooler=ROIPooler(3, (0.25,), 2, "ROIAlignV2"),
        rcnn_head=RCNNHead(d_model=8, num_classes=4, dim_feedforward=16, nhead=2, dim_dynamic=4, pooler_resolution=3),
        num_heads=2,
    )
    prior = -math.log(99.0)
    for stage in head.head_series:
        torch.testing.assert_close(stage.class_logits.bias, torch.full((4,), prior))
        assert not torch.allclose(stage.bboxes_delta.bias, torch.full((4,), prior))
    # deep copies are re-initialised independently
    assert not torch.equal(head.head_series[0].linear1.weight, head.head_series[1].linear1.weight)


# ---------------------------------------------------------------- configs
def test_authors_configs_values():
    cfg = _cfg("sparsercnn.res50.100pro.3x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "SparseRCNN"
    assert cfg.MODEL.SparseRCNN.NUM_PROPOSALS == 100 and cfg.MODEL.SparseRCNN.NUM_CLASSES == 80
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.BASE_LR == pytest.approx(2.5e-5)
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and not cfg.INPUT.CROP.ENABLED
    assert tuple(cfg.SOLVER.STEPS) == (210000, 250000) and cfg.SOLVER.MAX_ITER == 270000
    assert cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION == 7 and cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert len(cfg.TEST.AUG.MIN_SIZES) == len(cfg.TEST.AUG.SCALE_RANGES) == 13
    cfg300 = _cfg("sparsercnn.res101.300pro.3x.yaml")
    assert cfg300.MODEL.RESNETS.DEPTH == 101 and cfg300.MODEL.SparseRCNN.NUM_PROPOSALS == 300
    assert cfg300.INPUT.CROP.ENABLED and tuple(cfg300.INPUT.CROP.SIZE) == (384, 600)
    bccd = _cfg("sparsercnn.bccd.res18.yaml")
    assert bccd.MODEL.SparseRCNN.HIDDEN_DIM == bccd.MODEL.FPN.OUT_CHANNELS
    assert bccd.MODEL.SparseRCNN.NUM_CLASSES == 3 and bccd.DATASETS.TRAIN == ("bccd_train",)


# ---------------------------------------------------------------- full model
def test_res50_state_dict_matches_authors_layout():
    from common.modeling import build_model

    if not STATE_DICT_JSON.is_file():
        pytest.skip("../shared/reference/state_dicts is not available")
    expected = json.loads(STATE_DICT_JSON.read_text())
    torch.manual_seed(0)
    model = build_model(_cfg("sparsercnn.res50.100pro.3x.yaml", "MODEL.WEIGHTS", ""))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert got == expected
    assert list(got) == list(expected)  # same order as the authors' module registration
    assert len(got) == 523
    n_params = sum(p.numel() for p in model.parameters())
    # 106,344,008 state-dict numbers minus FrozenBN running stats (not parameters)
    assert 105.0e6 < n_params < 106.4e6


def _tiny_cfg():
    return _cfg(
        "Base-SparseRCNN.yaml",
        "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SparseRCNN.HIDDEN_DIM", "32",
        "MODEL.SparseRCNN.DIM_FEEDFORWARD", "64", "MODEL.SparseRCNN.DIM_DYNAMIC", "8",
        "MODEL.SparseRCNN.NHEADS", "4", "MODEL.SparseRCNN.NUM_PROPOSALS", "10",
        "MODEL.SparseRCNN.NUM_CLASSES", "3",
    )


@pytest.fixture(scope="module")
def tiny_model():
    from common.modeling import build_model

    torch.manual_seed(0)
    return build_model(_tiny_cfg())


def _inputs(with_instances=True):
    from common.structures import Boxes, Instances

    g = torch.Generator().manual_seed(0)
    out = []
    for (h, w), boxes, classes in [((64, 96), [[4, 6, 30, 40], [50, 10, 90, 60]], [0, 2]), ((80, 64), [], [])]:
        x = {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": 2 * h, "width": 2 * w}
        if with_instances:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
            x["instances"] = inst
        out.append(x)
    return out


def test_tiny_model_train_losses(tiny_model):
    tiny_model.train()
    losses = tiny_model(_inputs())
    assert len(losses) == 18  # 3 losses x 6 stages (deep supervision)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_4", "loss_giou_0"} <= set(losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    tiny_model.zero_grad()
    sum(losses.values()).backward()
    for p in (tiny_model.init_proposal_features.weight, tiny_model.init_proposal_boxes.weight,
              tiny_model.head.head_series[0].class_logits.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # a batch whose only image has no box still trains (negatives only, no box losses)
    only_empty = tiny_model(_inputs()[1:])
    assert only_empty["loss_bbox"].item() == 0.0 and only_empty["loss_ce"].item() > 0


def test_tiny_model_rejects_bad_inputs(tiny_model):
    tiny_model.train()
    with pytest.raises(ValueError, match="instances"):
        tiny_model(_inputs(with_instances=False))
    bad = _inputs()
    bad[0]["instances"].gt_classes = torch.tensor([0, 3])
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        tiny_model(bad)


def test_tiny_model_inference(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model).eval()
    with torch.no_grad():
        # untrained deltas push boxes out of the image (then dropped as empty): freeze the boxes
        for stage in model.head.head_series:
            stage.bboxes_delta.weight.zero_()
            stage.bboxes_delta.bias.zero_()
        outputs = model(_inputs(with_instances=False))
    for out, x in zip(outputs, _inputs(with_instances=False)):
        inst = out["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) == 10  # NUM_PROPOSALS detections, no NMS / threshold
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= x["width"]).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= x["height"]).all()
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()
        assert torch.all(inst.scores[:-1] >= inst.scores[1:]) and ((inst.scores > 0) & (inst.scores < 1)).all()
