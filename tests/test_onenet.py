"""OneNet unit tests: state dicts of the authors' configs, DCN forward on CPU, ltrb decoding,
top-k inference without NMS, multi-head training with single-head inference, anchors, losses."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from common.config import get_cfg
from common.structures import Boxes, Instances
from projects.OneNet.onenet import OneNet, add_onenet_config
from projects.OneNet.onenet.head import compute_locations, ltrb_to_boxes

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "projects" / "OneNet" / "configs"
STATE_DICTS = REPO.parent / "shared" / "reference" / "state_dicts"

# (tensors, values) of the authors' released models (reference state-dict dumps).
AUTHORS = {
    "onenet.res18.nodcn": (173, 14_323_502),
    "onenet.res18.dcn": (176, 14_540_863),
    "onenet.res50.nodcn": (371, 30_495_567),
    "onenet.res50.dcn": (374, 31_086_176),
    "onenet.fcos.res50": (314, 36_474_905),
    "onenet.retinanet.res50": (293, 38_019_764),
}


def _cfg(name: str, *opts: str):
    cfg = get_cfg()
    add_onenet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _inputs(n=2, h=64, w=96, with_gt=True):
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        d = {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)}
        if with_gt:
            inst = Instances((h, w))
            boxes = [[4.0, 6.0, 30.0, 40.0], [40.0, 10.0, 90.0, 60.0]][: 2 - i]  # image 1: one GT
            inst.gt_boxes = Boxes(torch.tensor(boxes))
            inst.gt_classes = torch.tensor([0, 2][: 2 - i])
            d["instances"] = inst
        out.append(d)
    return out


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_state_dict_matches_authors(name):
    cfg = _cfg(name)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = OneNet(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    tensors, values = AUTHORS[name]
    assert len(ours) == tensors
    assert sum(math.prod(s) for s in ours.values()) == values
    ref_file = STATE_DICTS / f"{name}.json"
    if ref_file.is_file():
        ref = json.loads(ref_file.read_text())
        assert list(ours) == list(ref)  # same keys, same order
        assert ours == ref


def test_retinanet_yaml_is_safe_and_has_the_authors_anchor_sizes():
    text = (CONFIGS / "onenet.retinanet.res50.yaml").read_text()
    assert "!!python" not in text
    sizes = yaml.safe_load(text)["MODEL"]["ANCHOR_GENERATOR"]["SIZES"]
    expected = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    assert sizes == expected


@pytest.mark.parametrize("opts", [(), ("MODEL.OneNet.MODULATE_DEFORM", "False")], ids=["dcnv2", "dcnv1"])
def test_dcn_config_runs_on_cpu(opts):
    """Forward + backward of the DCN neck (torchvision deform_conv2d) on a tiny input."""
    torch.manual_seed(0)
    model = OneNet(_cfg("onenet.res18.dcn", "MODEL.OneNet.NUM_CLASSES", "3", *opts))
    model.train()
    losses = model(_inputs())
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.deconv.deconv1.dcn.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(_inputs(with_gt=False))
    inst = out[0]["instances"]
    # Top-100 (location, class) pairs; detector_postprocess drops the zero-size boxes among them.
    assert inst.image_size == (64, 96) and 0 < len(inst) <= 100


def test_ltrb_decoding_on_stride4_grid():
    # Grid point (i, j) sits at x = 4j + 2, y = 4i + 2.
    loc = compute_locations(2, 3, 4, torch.device("cpu"))
    assert loc.tolist() == [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6]]
    ltrb = torch.zeros(1, 4, 2, 3)
    ltrb[0, :, 1, 2] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # i=1, j=2 -> (x, y) = (10, 6)
    ltrb[0, :, 0, 1] = torch.tensor([6.0, 2.0, 0.5, 8.0])  # i=0, j=1 -> (6, 2)
    boxes = ltrb_to_boxes(ltrb, 4)
    assert boxes.shape == (1, 6, 4)
    assert boxes[0, 5].tolist() == [10 - 1, 6 - 2, 10 + 3, 6 + 4]
    assert boxes[0, 1].tolist() == [6 - 6, 2 - 2, 6 + 0.5, 2 + 8]
    assert boxes[0, 0].tolist() == [2, 2, 2, 2]


def test_inference_is_topk_without_nms(monkeypatch):
    import projects.OneNet.onenet.detector as det

    def no_nms(*args, **kwargs):
        raise AssertionError("NMS must not run at inference")

    monkeypatch.setattr(det, "batched_nms", no_nms)
    model = OneNet(_cfg("onenet.bccd.res18", "TEST.DETECTIONS_PER_IMAGE", "7"))
    # Hand-made outputs: 2 locations x 3 classes; two identical boxes must both survive.
    logits = torch.tensor([[[3.0, -5.0, 1.0], [2.9, -1.0, -9.0]]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])
    (res,) = model.inference(logits, boxes, [(20, 20)])
    assert len(res) == 6  # min(7, 2 * 3)
    torch.testing.assert_close(res.scores, torch.tensor([3.0, 2.9, 1.0, -1.0, -5.0, -9.0]).sigmoid())
    assert res.pred_classes.tolist() == [0, 0, 2, 1, 1, 2]
    assert res.pred_boxes.tensor[:2].tolist() == [[0, 0, 10, 10]] * 2


def test_nms_ablation_key_removes_duplicates():
    model = OneNet(_cfg("onenet.bccd.res18", "MODEL.OneNet.NMS", "True"))
    logits = torch.tensor([[[3.0, -9.0, -9.0], [2.9, -9.0, -9.0]]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])
    (res,) = model.inference(logits, boxes, [(20, 20)])
    assert (res.pred_classes == 0).sum() == 1


def test_multi_head_training_builds_stages_and_infers_with_stage_one():
    torch.manual_seed(0)
    multi = OneNet(_cfg("onenet.bccd.res18", "MODEL.OneNet.NUM_HEADS_TRAIN", "3"))
    single = OneNet(_cfg("onenet.bccd.res18"))
    assert len(multi.head.cascade_convs) == 2 and len(single.head.cascade_convs) == 0
    assert multi.head.cascade_convs[0].weight.shape == (64, 128, 3, 3)  # 2C -> C
    multi.train()
    losses = multi(_inputs())
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_stage2", "_stage3")}
    sum(losses.values()).backward()
    # cls/reg convs are shared: one parameter set receives the gradients of every stage.
    assert multi.head.cascade_convs[1].weight.grad is not None and multi.head.cls_score.weight.grad is not None
    # Single-head inference: the multi-head checkpoint loads into the authors' single-head model.
    missing, unexpected = single.load_state_dict(multi.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(
        f"head.cascade_convs.{i}.{p}" for i in range(2) for p in ("weight", "bias"))
    multi.eval()
    single.eval()
    images = _inputs(with_gt=False)
    with torch.no_grad():
        a, b = multi(images)[0]["instances"], single(images)[0]["instances"]
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_multi_head_lr_config_documents_the_larger_rate():
    cfg = _cfg("onenet.res50.dcn.multihead")
    assert cfg.MODEL.OneNet.NUM_HEADS_TRAIN == 3
    assert cfg.SOLVER.BASE_LR == 1e-4 and _cfg("onenet.res50.dcn").SOLVER.BASE_LR == 5e-5


def test_loss_with_an_image_without_gt_and_a_batch_without_gt():
    torch.manual_seed(0)
    model = OneNet(_cfg("onenet.bccd.res18", "MODEL.OneNet.MATCHER_MODE", "argmin", "MODEL.OneNet.CLASS_COST", "0.0"))
    model.train()
    batch = _inputs()
    batch[1]["instances"] = batch[1]["instances"][[]]  # no GT
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    for d in batch:
        d["instances"] = d["instances"][[]]
    losses = model(batch)
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_giou"]) == 0.0
    assert float(losses["loss_ce"]) > 0  # all locations are negatives
    sum(losses.values()).backward()


def test_loss_normalised_by_number_of_gt_boxes():
    from common.assigners import MinCostMatcher
    from projects.OneNet.onenet.loss import SetCriterion

    crit = SetCriterion(2, MinCostMatcher(), {})
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 20, 20], [5.0, 5, 15, 15]]])
    stage = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": boxes}
    tgt = [{"labels": torch.tensor([1]), "boxes_xyxy": torch.tensor([[0.0, 0, 10, 20]]),
            "image_size_xyxy": torch.tensor([40.0, 20, 40, 20])}]
    losses = crit([stage], tgt)
    # Costs (focal term equal for all): loc 0: 5 * |10-20|/20 - 2 * 0.5 = 1.5; loc 1: 5 * |20-10|/40
    # - 2 * 0.5 = 0.25; loc 2: 5 * 0.75 - 2 * (0.2 - 50/300) > 3. Location 1 wins:
    # loss_bbox = 10 / 40 = 0.25, loss_giou = 1 - GIoU = 1 - 200/400 = 0.5.
    assert float(losses["loss_bbox"]) == pytest.approx(0.25)
    assert float(losses["loss_giou"]) == pytest.approx(0.5)
    # Focal at p = 0.5: positive 0.25 * 0.25 * log 2, each of the 5 negatives 0.75 * 0.25 * log 2.
    assert float(losses["loss_ce"]) == pytest.approx((0.0625 + 5 * 0.1875) * math.log(2), rel=1e-5)


def test_default_anchor_generator_hand_table():
    from common.modeling import DefaultAnchorGenerator

    gen = DefaultAnchorGenerator(sizes=[[32, 64]], aspect_ratios=[[0.25, 1, 4]], strides=[4], offset=0.0)
    (anchors,) = gen([torch.zeros(1, 1, 1, 2)])
    first = [[-32, -8, 32, 8], [-16, -16, 16, 16], [-8, -32, 8, 32],
             [-64, -16, 64, 16], [-32, -32, 32, 32], [-16, -64, 16, 64]]
    second = [[x1 + 4, y1, x2 + 4, y2] for x1, y1, x2, y2 in first]  # next column: + stride in x
    torch.testing.assert_close(anchors.tensor, torch.tensor(first + second, dtype=torch.float32))
    assert gen.num_cell_anchors == [6] and not gen.state_dict()  # non-persistent


def test_bad_config_errors_name_the_key():
    with pytest.raises(ValueError, match="DECONV_CHANNEL"):
        OneNet(_cfg("onenet.res18.nodcn", "MODEL.OneNet.DECONV_CHANNEL", "[2048, 256, 128, 64]"))
    with pytest.raises(ValueError, match="MODEL.OneNet.HEAD"):
        OneNet(_cfg("onenet.bccd.res18", "MODEL.OneNet.HEAD", "YOLO"))
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        model = OneNet(_cfg("onenet.bccd.res18", "MODEL.OneNet.NUM_CLASSES", "2"))
        model.train()
        model(_inputs())


def test_padding_follows_the_backbone_size_divisibility():
    """Pad to lcm(backbone.size_divisibility, 32 for the deconv neck), not a hard-coded 32."""
    from common.modeling import BACKBONE_REGISTRY, build_resnet_backbone

    name = "_ResNetDivisibleBy64ForOneNetTest"
    if name not in BACKBONE_REGISTRY:
        def _build(cfg, input_shape):
            backbone = build_resnet_backbone(cfg, input_shape)
            backbone.__class__ = type("ResNet64", (type(backbone),), {"size_divisibility": property(lambda s: 64)})
            return backbone

        _build.__name__ = name
        BACKBONE_REGISTRY.register(_build)
    base = OneNet(_cfg("onenet.bccd.res18"))
    assert base.backbone.size_divisibility == 0 and base.size_divisibility == 32  # the authors' 32
    model = OneNet(_cfg("onenet.bccd.res18", "MODEL.BACKBONE.NAME", name))
    assert model.size_divisibility == 64
    images = model.preprocess_image(_inputs(n=1, h=64, w=96, with_gt=False))
    assert tuple(images.tensor.shape[-2:]) == (64, 128) and images.image_sizes == [(64, 96)]
    assert tuple(base.preprocess_image(_inputs(n=1, h=64, w=96, with_gt=False)).tensor.shape[-2:]) == (64, 96)
