"""Test-time augmentation: Sparse R-CNN's ``SparseRCNNWithTTA`` (authors' soft-vote / NMS merges,
flip + multi-scale inputs, ``train_net.py --eval-only TEST.AUG.ENABLED True``), and the clear errors
of keys that would otherwise be silently ignored (TEST.AUG for OneNet / CenterNet, VIS_PERIOD)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from common.config import get_cfg
from projects.SparseRCNN.sparsercnn import SparseRCNNWithTTA, add_sparsercnn_config
from projects.SparseRCNN.sparsercnn.test_time_augmentation import nms_merge, soft_vote_merge, tta_inputs

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- merges
def _reference_soft_vote(boxes, scores, labels, thr=0.65, max_det=100):
    """Plain greedy loop of the authors' bbox_vote ("soft_vote"), one cluster at a time."""
    off = labels.float()[:, None] * (boxes.max() + 1)
    det = torch.cat([boxes + off, scores[:, None], labels.float()[:, None]], 1)
    det = det[scores.argsort(descending=True, stable=True)]
    out = []
    while len(det):
        iou = box_iou(det[:1, :4], det[:, :4])[0]
        members, det = det[iou >= thr], det[iou < thr]
        if len(members) == 1:
            out.append(members)
            continue
        w = members[:, 4:5]
        top = torch.cat([(members[:, :4] * w).sum(0) / w.sum(), members[:1, 4], members[:1, 5]])[None]
        soft = members.clone()
        soft[:, 4] *= 1 - iou[iou >= thr]
        out += [top, soft[soft[:, 4] >= 0.05]]
    res = torch.cat(out)
    res = res[res[:, 4].argsort(descending=True, stable=True)][:max_det]
    res[:, :4] -= res[:, 5:6] * (boxes.max() + 1)
    return res[:, :4], res[:, 4], res[:, 5].long()


def test_soft_vote_merge_hand_example():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0], [0.0, 0.0, 10.0, 10.0],
                          [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.6, 0.8, 0.3])
    labels = torch.tensor([0, 0, 1, 0])
    b, s, c = soft_vote_merge(boxes, scores, labels, 0.65, 100)
    # A, B same class, IoU 100/110 >= 0.65: voted box (0.9 A + 0.6 B) / 1.5 with A's score; B again
    # with 0.6 * (1 - 10/11) = 0.0545 >= 0.05 (A's own decayed score is 0); C (other class) and D alone.
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8, 0.3, 0.6 / 11]))
    assert c.tolist() == [0, 1, 0, 0]
    torch.testing.assert_close(b, torch.tensor([[0.0, 0.0, 10.0, 10.4], [0.0, 0.0, 10.0, 10.0],
                                                [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 11.0]]))
    # max_detections cuts after sorting; empty input -> empty output
    assert soft_vote_merge(boxes, scores, labels, 0.65, 2)[1].tolist() == pytest.approx([0.9, 0.8])
    assert soft_vote_merge(boxes[:0], scores[:0], labels[:0])[0].shape == (0, 4)


def test_soft_vote_merge_equals_the_greedy_loop():
    g = torch.Generator().manual_seed(0)
    # Clusters of jittered copies (as from 26 augmented runs) over 3 classes.
    centres = torch.rand(12, 2, generator=g) * 200
    wh = 10 + torch.rand(12, 2, generator=g) * 60
    idx = torch.randint(0, 12, (300,), generator=g)
    ctr = centres[idx] + torch.randn(300, 2, generator=g) * 3
    size = wh[idx] * (1 + 0.1 * torch.randn(300, 2, generator=g))
    boxes = torch.cat([ctr - size / 2, ctr + size / 2], 1)
    scores = torch.rand(300, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    b, s, c = soft_vote_merge(boxes, scores, labels, 0.65, 100)
    rb, rs, rc = _reference_soft_vote(boxes, scores, labels, 0.65, 100)
    assert len(s) == 100
    torch.testing.assert_close(s, rs)
    assert c.tolist() == rc.tolist()
    torch.testing.assert_close(b, rb, rtol=0, atol=1e-3)  # float summation order only


def test_nms_merge_is_fast_rcnn_inference_single_image():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0],
                          [-5.0, 50.0, 30.0, 70.0], [0.0, 0.0, 5.0, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 1e-9])
    labels = torch.tensor([0, 0, 1, 2, 0])
    r = nms_merge(boxes, scores, labels, (60, 25), nms_thresh=0.5, max_detections=100)
    # box 1 suppressed by box 0 (IoU 90/110 > 0.5, same class); box 2 is another class; box 4 under
    # the 1e-8 score threshold; box 3 clipped to the 25 x 60 image.
    assert r.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert r.pred_classes.tolist() == [0, 1, 2]
    assert r.pred_boxes.tensor.tolist() == [[0, 0, 10, 10], [1, 0, 11, 10], [0, 50, 25, 60]]
    assert len(nms_merge(boxes, scores, labels, (60, 25), 0.5, max_detections=1)) == 1


def test_tta_inputs_order_sizes_and_inverse_transforms():
    # The test mapper resized an 80 x 120 original to 40 x 60.
    d = {"image": torch.zeros(3, 40, 60, dtype=torch.uint8), "height": 80, "width": 120, "image_id": 7}
    inputs, tfms = tta_inputs(d, (20, 30), max_size=1000, flip=True)
    assert [tuple(x["image"].shape[1:]) for x in inputs] == [(20, 30), (20, 30), (30, 45), (30, 45)]
    assert all(x["image_id"] == 7 and x["height"] == 80 for x in inputs)
    # flipped 30 x 45 input: x -> 45 - x, then x 120/45, y 80/30
    back = tfms[3].inverse().apply_box(np.array([[0.0, 0.0, 9.0, 3.0]]))
    np.testing.assert_allclose(back, [[96.0, 0.0, 120.0, 8.0]], atol=1e-4)
    assert inputs[1]["image"].dtype == torch.uint8
    capped = tta_inputs(d, (60,), max_size=80, flip=False)[0]
    assert tuple(capped[0]["image"].shape[1:]) == (53, 80)  # 60 x 90, long side capped at MAX_SIZE


# --------------------------------------------------------------------------- the wrapper on a model
def _tiny_sparsercnn(*opts):
    from common.modeling import build_model

    cfg = get_cfg()
    add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(REPO / "projects" / "SparseRCNN" / "configs" / "Base-SparseRCNN.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SparseRCNN.HIDDEN_DIM", "32",
        "MODEL.SparseRCNN.DIM_FEEDFORWARD", "64", "MODEL.SparseRCNN.DIM_DYNAMIC", "8",
        "MODEL.SparseRCNN.NHEADS", "4", "MODEL.SparseRCNN.NUM_PROPOSALS", "10",
        "MODEL.SparseRCNN.NUM_HEADS", "2", "MODEL.SparseRCNN.NUM_CLASSES", "3", *opts,
    ])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # untrained deltas throw boxes out of the image: keep the proposals
        for stage in model.head.head_series:
            stage.bboxes_delta.weight.zero_()
            stage.bboxes_delta.bias.zero_()
        model.init_proposal_boxes.weight.copy_(torch.rand(10, 4, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25)
    return cfg, model


def _image(h=64, w=96):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": 2 * h, "width": 2 * w}


def test_single_scale_tta_without_flip_equals_plain_inference():
    """One scale equal to the input size, no flip, NMS merge with IoU 1 (nothing suppressed): the
    TTA output must be the plain model's detections (same scores, classes and boxes)."""
    cfg, model = _tiny_sparsercnn("TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.FLIP", "False",
                                  "TEST.AUG.CVPODS_TTA", "False", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0")
    with torch.no_grad():
        plain = model([_image()])[0]["instances"]
        tta = SparseRCNNWithTTA(cfg, model)([_image()])[0]["instances"]
    assert tta.image_size == plain.image_size == (128, 192)
    order = plain.scores.argsort(descending=True, stable=True)
    torch.testing.assert_close(tta.scores, plain.scores[order])
    assert tta.pred_classes.tolist() == plain.pred_classes[order].tolist()
    torch.testing.assert_close(tta.pred_boxes.tensor, plain.pred_boxes.tensor[order], rtol=0, atol=1e-3)


def test_cvpods_tta_flip_and_scales_runs_the_authors_merge():
    cfg, model = _tiny_sparsercnn("TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "200",
                                  "TEST.AUG.SCALE_RANGES", "([0, 10000], [0, 10000])")
    tta = SparseRCNNWithTTA(cfg, model)
    assert tta.cvpods_tta and tta.scale_filter and tta.flip  # the authors' defaults
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0][0]["image"].shape[1:])))
    with torch.no_grad():
        out = tta([_image()])[0]["instances"]
    assert calls == [(48, 72), (48, 72), (64, 96), (64, 96)]  # one by one: s0, s0 flipped, s1, s1 flipped
    assert out.image_size == (128, 192) and 0 < len(out) <= 10  # NUM_PROPOSALS
    boxes = out.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 192).all() and (boxes[:, 3] <= 128).all()
    assert torch.all(out.scores[:-1] >= out.scores[1:])
    # A scale filter that rejects every box leaves no detection.
    cfg2, _ = _tiny_sparsercnn("TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.SCALE_RANGES", "([0, 1], [0, 1])")
    with torch.no_grad():
        assert len(SparseRCNNWithTTA(cfg2, model)([_image()])[0]["instances"]) == 0


def test_tta_config_errors():
    cfg, model = _tiny_sparsercnn("TEST.AUG.MIN_SIZES", "(48, 64, 80)")  # 13 default SCALE_RANGES
    with pytest.raises(ValueError, match="SCALE_RANGES"):
        SparseRCNNWithTTA(cfg, model)
    cfg.defrost()
    cfg.TEST.AUG.SCALE_FILTER = False
    SparseRCNNWithTTA(cfg, model)
    with pytest.raises(ValueError, match="eval"):
        SparseRCNNWithTTA(cfg, model.train())([_image()])


def test_cli_eval_only_with_test_aug(tmp_path, bccd_root):
    from e2e_helpers import bccd_subset_json, copypaste_metrics, run_script

    val = bccd_subset_json(bccd_root, tmp_path / "val4.json", 4, split="val")
    out = tmp_path / "out"
    log = run_script(
        REPO / "projects" / "SparseRCNN" / "train_net.py", "--eval-only",
        "--config-file", str(REPO / "projects" / "SparseRCNN" / "configs" / "sparsercnn.bccd.res18.yaml"),
        "DATASETS.COCO_JSON", f"(('val4', '{val}', '{bccd_root / 'images'}'),)", "DATASETS.TEST", "('val4',)",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.SparseRCNN.NUM_PROPOSALS", "20", "TEST.AUG.ENABLED", "True",
        "TEST.AUG.MIN_SIZES", "(80, 96)", "TEST.AUG.MAX_SIZE", "160",
        "TEST.AUG.SCALE_RANGES", "([0, 10000], [0, 10000])", "OUTPUT_DIR", str(out),
    )
    assert "Running inference with test-time augmentation" in log
    assert len([l for l in log.splitlines() if "copypaste:" in l]) >= 4  # plain and TTA tables
    copypaste_metrics(log)
    dets = json.loads((out / "inference_TTA" / "coco_instances_results.json").read_text())
    assert 0 < len(dets) <= 4 * 20
    assert all(d["bbox"][0] >= 0 and d["bbox"][0] + d["bbox"][2] <= 640 + 1e-3 for d in dets)


# --------------------------------------------------------------------------- keys that must not be ignored
def _cfg_of(project, config, *opts):
    from importlib import import_module

    mod, adder = {"OneNet": ("projects.OneNet.onenet", "add_onenet_config"),
                  "CenterNet": ("projects.CenterNet.centernet", "add_centernet_config"),
                  "SparseRCNN": ("projects.SparseRCNN.sparsercnn", "add_sparsercnn_config")}[project]
    cfg = get_cfg()
    getattr(import_module(mod), adder)(cfg)
    cfg.merge_from_file(str(REPO / "projects" / project / "configs" / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


@pytest.mark.parametrize("project,config,match", [
    ("OneNet", "onenet.bccd.res18.yaml", "OneNet has no test-time augmentation"),
    ("CenterNet", "centernet.bccd.res18.yaml", "MODEL.CENTERNET.FLIP_TEST and MODEL.CENTERNET.TEST_SCALES"),
])
def test_test_aug_enabled_raises_for_projects_without_it(project, config, match):
    from common.modeling import build_model

    build_model(_cfg_of(project, config))  # default: fine
    with pytest.raises(NotImplementedError, match=match):
        build_model(_cfg_of(project, config, "TEST.AUG.ENABLED", "True"))


@pytest.mark.parametrize("project,config", [
    ("SparseRCNN", "sparsercnn.bccd.res18.yaml"), ("OneNet", "onenet.bccd.res18.yaml"),
    ("CenterNet", "centernet.bccd.res18.yaml"),
])
def test_vis_period_raises_instead_of_being_ignored(project, config):
    from common.modeling import build_model

    with pytest.raises(NotImplementedError, match="VIS_PERIOD=20"):
        build_model(_cfg_of(project, config, "VIS_PERIOD", "20"))
