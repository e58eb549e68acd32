"""COCOEvaluator backends: faster-coco-eval vs the official pycocotools COCOeval.

Parity on real COCO ground truth (coco128, 939 annotations, 80 categories, crowd boxes) with
jittered predictions, and on a hand-made case whose AP is computed by hand below.
"""
import json
import logging
import sys
import uuid

import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.data import DatasetCatalog, MetadataCatalog
from common.data.datasets import register_coco_instances
from common.evaluation import COCOEvaluator
from common.evaluation import coco_evaluation as ce
from common.structures import Boxes, Instances

faster_coco_eval = pytest.importorskip("faster_coco_eval")

BACKENDS = ("pycocotools", "faster_coco_eval")


def _register(name, json_file, root):
    register_coco_instances(name, {}, str(json_file), str(root))
    DatasetCatalog.get(name)  # fills thing_classes / id mapping as the loaders do


def _unregister(name):
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, predictions, backend, **kwargs):
    """predictions: {image_id: Instances}; returns the ``bbox`` results dict."""
    ev = COCOEvaluator(name, distributed=False, backend=backend, **kwargs)
    assert ev.backend == backend
    ev.reset()
    for img_id, inst in predictions.items():
        ev.process([{"image_id": img_id}], [{"instances": inst}])
    return ev.evaluate()["bbox"]


def _instances(boxes_xyxy, scores, classes, hw=(640, 640)):
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
    return inst


def _jittered_predictions(dicts, num_classes, seed=0):
    """Per image: each GT box 2x with 10% jitter (80% right class), plus 15 random boxes."""
    rng = np.random.default_rng(seed)
    preds = {}
    for d in dicts:
        gt = np.asarray([a["bbox"] for a in d["annotations"]], dtype=np.float64).reshape(-1, 4)  # XYWH
        gt_cls = np.asarray([a["category_id"] for a in d["annotations"]], dtype=np.int64)
        gt = np.repeat(gt, 2, axis=0)
        gt_cls = np.repeat(gt_cls, 2)
        wh = gt[:, 2:].repeat(2, axis=1)
        xywh = gt + rng.normal(0.0, 0.1, gt.shape) * wh
        cls = np.where(rng.random(len(gt_cls)) < 0.8, gt_cls, rng.integers(0, num_classes, len(gt_cls)))
        rand = np.concatenate([rng.random((15, 2)) * 400, 8 + rng.random((15, 2)) * 150], axis=1)
        xywh = np.concatenate([xywh, rand])
        xywh[:, 2:] = np.maximum(xywh[:, 2:], 1.0)
        cls = np.concatenate([cls, rng.integers(0, num_classes, 15)])
        scores = np.concatenate([rng.random(len(gt_cls)), rng.random(15) * 0.6])
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        preds[d["image_id"]] = _instances(xyxy, scores, cls, (d["height"], d["width"]))
    return preds


def _assert_same_results(a, b):
    """Same keys; every value equal up to floating-point rounding (1e-12 percent).

    Not bit-identical: pycocotools computes precision as ``tp / (tp + fp + np.spacing(1))``, the
    C++ accumulate of faster-coco-eval without the ``eps``, so a precision of exactly 1 is
    ``1 - 2e-16`` in one and ``1`` in the other (e.g. APm 99.99999999999997 vs 100.0).
    """
    assert list(a) == list(b)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=0, abs=1e-12, nan_ok=True), k


@pytest.mark.parametrize("max_dets", [None, 5])
def test_coco128_parity(coco128_root, max_dets):
    name = f"_t_coco128_eval_{uuid.uuid4().hex[:6]}"
    _register(name, coco128_root / "annotations.json", coco128_root)
    try:
        dicts = DatasetCatalog.get(name)
        preds = _jittered_predictions(dicts, 80)
        results = {b: _evaluate(name, preds, b, max_dets_per_image=max_dets) for b in BACKENDS}
        _assert_same_results(results["pycocotools"], results["faster_coco_eval"])
        assert len([k for k in results["pycocotools"] if k.startswith("AP-")]) == 80
        assert 10.0 < results["pycocotools"]["AP"] < 90.0  # a non-trivial operating point
    finally:
        _unregister(name)


def test_coco128_all_twelve_stats_equal(coco128_root):
    from pycocotools.coco import COCO

    name = f"_t_coco128_stats_{uuid.uuid4().hex[:6]}"
    _register(name, coco128_root / "annotations.json", coco128_root)
    try:
        dicts = DatasetCatalog.get(name)
        lut = sorted(MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id)
        results = []
        for img_id, inst in _jittered_predictions(dicts, 80, seed=1).items():
            for r in ce.instances_to_coco_json(inst, img_id):
                r["category_id"] = lut[r["category_id"]]
                results.append(r)
        gt = COCO(str(coco128_root / "annotations.json"))
        stats = {b: ce._evaluate_predictions_on_coco(gt, results, "bbox", backend=b).stats for b in BACKENDS}
        assert stats["pycocotools"].shape == (12,)
        np.testing.assert_allclose(stats["pycocotools"], np.asarray(stats["faster_coco_eval"])[:12], rtol=0, atol=1e-14)
    finally:
        _unregister(name)


# ------------------------------------------------------------------------------------------
# Hand-made case. Dataset ids 7 ("cat", contiguous 0) and 9 ("dog", contiguous 1).
#   image 1: cat [0, 0, 100, 100] (large)            image 2: cat [200, 200, 100, 100] (large),
#                                                             dog [0, 0, 50, 50] (medium)
# Predictions (XYXY): cat 0.9 exact on image 1 (TP), cat 0.8 at [300,300,400,400] on image 1
# (FP, no overlap), cat 0.7 exact on image 2 (TP), dog 0.6 exact on image 2 (TP).
# cat: precision/recall after each detection (1, .5), (.5, .5), (2/3, 1); interpolated precision
#   is 1 for the 51 recall thresholds 0..0.50 and 2/3 for the 50 thresholds 0.51..1 at every IoU
#   threshold (IoU 1 or 0), so AP_cat = (51 + 50 * 2/3) / 101. dog: AP 1.
# AP = AP50 = AP75 = (AP_cat + 1) / 2; APl = AP_cat (the only large GTs are cats); APm = 1 (the
# dog); APs undefined (NaN).
AP_CAT = (51 + 50 * 2 / 3) / 101


@pytest.fixture()
def hand_made(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": 500, "width": 500},
                   {"id": 2, "file_name": "2.jpg", "height": 500, "width": 500}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [200, 200, 100, 100], "area": 10000, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
    }
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(coco))
    name = f"_t_hand_{uuid.uuid4().hex[:6]}"
    _register(name, json_file, tmp_path)
    preds = {
        1: _instances([[0, 0, 100, 100], [300, 300, 400, 400]], [0.9, 0.8], [0, 0], (500, 500)),
        2: _instances([[200, 200, 300, 300], [0, 0, 50, 50]], [0.7, 0.6], [0, 1], (500, 500)),
    }
    yield name, preds
    _unregister(name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_ap(hand_made, backend):
    name, preds = hand_made
    res = _evaluate(name, preds, backend)
    expected = {"AP": (AP_CAT + 1) / 2, "AP50": (AP_CAT + 1) / 2, "AP75": (AP_CAT + 1) / 2,
                "APm": 1.0, "APl": AP_CAT, "AP-cat": AP_CAT, "AP-dog": 1.0}
    for k, v in expected.items():
        assert res[k] == pytest.approx(100 * v, abs=1e-9), k
    assert np.isnan(res["APs"])


def test_hand_made_backends_equal(hand_made):
    name, preds = hand_made
    _assert_same_results(*(_evaluate(name, preds, b) for b in BACKENDS))


# ------------------------------------------------------------------------------------------
def test_auto_prefers_faster_coco_eval():
    assert ce.resolve_evaluator_backend("auto") == "faster_coco_eval"
    assert ce.resolve_evaluator_backend("faster-coco-eval") == "faster_coco_eval"
    assert ce.resolve_evaluator_backend("pycocotools") == "pycocotools"


def test_auto_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes `import faster_coco_eval` fail
    monkeypatch.setattr(ce, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger=ce.__name__):
        assert ce.resolve_evaluator_backend("auto") == "pycocotools"
        assert ce.resolve_evaluator_backend("auto") == "pycocotools"
    # (caplog may hold one record twice, through the logger's and the root's handler)
    warnings = list({id(r): r for r in caplog.records if r.levelno == logging.WARNING}.values())
    assert len(warnings) == 1
    assert "falling back" in warnings[0].getMessage() and "pycocotools" in warnings[0].getMessage()
    with pytest.raises(ImportError, match="TEST.EVALUATOR_BACKEND 'faster_coco_eval'.*pip install faster-coco-eval"):
        ce.resolve_evaluator_backend("faster_coco_eval")


def test_bad_backend_name_names_the_key():
    with pytest.raises(ValueError, match="TEST.EVALUATOR_BACKEND must be one of"):
        ce.resolve_evaluator_backend("cocoapi")


def test_config_key_and_detectron2_switches(hand_made):
    name, _ = hand_made
    cfg = get_cfg()
    assert cfg.TEST.EVALUATOR_BACKEND == "auto"
    cfg.TEST.EVALUATOR_BACKEND = "pycocotools"
    assert COCOEvaluator(name, cfg, False).backend == "pycocotools"  # deprecated (name, cfg, ...) form
    assert COCOEvaluator(name, distributed=False).backend == "faster_coco_eval"  # detectron2 default
    assert COCOEvaluator(name, distributed=False, use_fast_impl=False).backend == "pycocotools"
