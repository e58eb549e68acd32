"""COCOEvaluator on a hand-made ground truth with hand-computed AP values.

Ground truth (all boxes 40x40 = 1600 px^2, i.e. COCO "medium"; dataset category ids 1 and 3 so
that the contiguous -> dataset id mapping is exercised):

    image 1: RBC [0,0,40,40], RBC [50,50,40,40], WBC [50,0,40,40]
    image 2: RBC [0,0,40,40], RBC [50,50,40,40], WBC [0,50,40,40]
    image 3: no objects
"""
import itertools
import json
import math
import uuid

import numpy as np
import pytest
import torch

from common.data import DatasetCatalog, MetadataCatalog
from common.data.datasets import register_coco_instances
from common.evaluation import COCOEvaluator, instances_to_coco_json
from common.structures import Boxes, Instances

RBC, WBC = 0, 1  # contiguous ids
GT = {  # image id -> [(contiguous class, [x, y, w, h])]
    1: [(RBC, [0, 0, 40, 40]), (RBC, [50, 50, 40, 40]), (WBC, [50, 0, 40, 40])],
    2: [(RBC, [0, 0, 40, 40]), (RBC, [50, 50, 40, 40]), (WBC, [0, 50, 40, 40])],
    3: [],
}
DATASET_CAT_ID = {RBC: 1, WBC: 3}


def _write_gt(path):
    ann_id = itertools.count(1)
    coco = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in GT],
        "annotations": [
            {"id": next(ann_id), "image_id": i, "category_id": DATASET_CAT_ID[c], "bbox": b,
             "area": b[2] * b[3], "iscrowd": 0}
            for i, objs in GT.items() for c, b in objs
        ],
        "categories": [{"id": 1, "name": "RBC"}, {"id": 3, "name": "WBC"}],
    }
    path.write_text(json.dumps(coco))


@pytest.fixture()
def dataset(tmp_path):
    name = f"h3_toy_{uuid.uuid4().hex[:8]}"
    json_file = tmp_path / "gt.json"
    _write_gt(json_file)
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(dets):
    """dets: list of (class, score, [x0, y0, x1, y1])."""
    inst = Instances((100, 100))
    boxes = torch.tensor([d[2] for d in dets], dtype=torch.float32).reshape(-1, 4)
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.tensor([d[1] for d in dets], dtype=torch.float32)
    inst.pred_classes = torch.tensor([d[0] for d in dets], dtype=torch.int64)
    return inst


def _xyxy(b):
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def _run(evaluator, per_image):
    evaluator.reset()
    for image_id, dets in per_image.items():
        evaluator.process([{"image_id": image_id}], [{"instances": _instances(dets)}])
    return evaluator.evaluate()


def _perfect(score_step=0.05):
    scores = iter(np.arange(0.95, 0.0, -score_step).tolist())
    return {i: [(c, next(scores), _xyxy(b)) for c, b in objs] for i, objs in GT.items()}


def test_perfect_predictions_give_ap_100(dataset, tmp_path):
    out = tmp_path / "inference"
    res = _run(COCOEvaluator(dataset, output_dir=str(out)), _perfect())
    bbox = res["bbox"]
    for k in ("AP", "AP50", "AP75", "APm", "AP-RBC", "AP-WBC"):
        assert bbox[k] == pytest.approx(100.0), k
    # No small/large ground truth: COCOeval reports -1, detectron2 turns it into NaN.
    assert math.isnan(bbox["APs"]) and math.isnan(bbox["APl"])
    assert list(bbox)[:6] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]

    written = json.loads((out / "coco_instances_results.json").read_text())
    assert len(written) == 6
    assert {r["category_id"] for r in written} == {1, 3}  # dataset ids, not contiguous ones
    first = next(r for r in written if r["image_id"] == 1 and r["category_id"] == 3)
    assert first["bbox"] == pytest.approx([50, 0, 40, 40])  # XYWH
    assert set(first) == {"image_id", "category_id", "bbox", "score"}
    saved = torch.load(out / "instances_predictions.pth", weights_only=True)
    assert [p["image_id"] for p in saved] == [1, 2, 3]


def test_half_of_rbc_with_false_positive_matches_hand_computed_ap(dataset):
    # RBC, by descending score: TP (img1), FP on the empty image 3, TP (img2); 2 of 4 RBC found.
    # precision 1, 1/2, 2/3 at recall .25, .25, .5; interpolated: 1 for recall <= .25 (26 of
    # COCO's 101 recall points), 2/3 for (.25, .5] (25 points), 0 beyond (50 points).
    preds = {
        1: [(RBC, 0.9, [0, 0, 40, 40]), (WBC, 0.7, [50, 0, 90, 40])],
        2: [(RBC, 0.8, [0, 0, 40, 40]), (WBC, 0.6, [0, 50, 40, 90])],
        3: [(RBC, 0.85, [10, 10, 50, 50])],
    }
    res = _run(COCOEvaluator(dataset, distributed=False), preds)["bbox"]
    ap_rbc = (26 * 1.0 + 25 * 2.0 / 3.0) / 101 * 100
    assert res["AP-RBC"] == pytest.approx(ap_rbc, abs=1e-6)
    assert res["AP-WBC"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx((ap_rbc + 100.0) / 2, abs=1e-6)
    assert res["AP50"] == pytest.approx(res["AP"], abs=1e-6)  # boxes are exact: IoU does not matter


def test_max_dets_per_image_is_honoured(dataset):
    # One detection per image and class: only the higher-scored of the two RBC per image counts,
    # so RBC recall stops at .5 with precision 1 -> 51 of 101 recall points.
    res = _run(COCOEvaluator(dataset, max_dets_per_image=1), _perfect())["bbox"]
    assert res["AP-RBC"] == pytest.approx(51 / 101 * 100, abs=1e-6)
    assert res["AP-WBC"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx((51 / 101 * 100 + 100) / 2, abs=1e-6)


@pytest.mark.parametrize("bad_class", [2, -1])
def test_class_id_outside_dataset_raises(dataset, bad_class):
    preds = {1: [(bad_class, 0.9, [0, 0, 40, 40])]}
    with pytest.raises(AssertionError, match=r"class=%d.*only has 2 classes" % bad_class):
        _run(COCOEvaluator(dataset), preds)
    with pytest.raises(ValueError):
        _run(COCOEvaluator(dataset), preds)


def test_zero_predictions_do_not_crash(dataset, tmp_path):
    res = _run(COCOEvaluator(dataset, output_dir=str(tmp_path)), {1: [], 2: [], 3: []})
    assert set(res) == {"bbox"}
    assert all(math.isnan(v) for v in res["bbox"].values())
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == []
    # Nothing processed at all: detectron2 returns an empty dict.
    ev = COCOEvaluator(dataset)
    ev.reset()
    assert ev.evaluate() == {}


def test_deprecated_cfg_argument_and_unknown_image(dataset):
    from common.config import get_cfg

    ev = COCOEvaluator(dataset, get_cfg(), True, None)  # authors' train_net form
    assert _run(ev, _perfect())["bbox"]["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        _run(ev, {99: [(RBC, 0.9, [0, 0, 40, 40])]})


def test_dataset_without_json_is_converted(tmp_path):
    name = f"h3_nojson_{uuid.uuid4().hex[:8]}"
    dicts = [
        {"file_name": f"{i}.jpg", "image_id": i, "height": 100, "width": 100,
         "annotations": [{"bbox": b, "bbox_mode": 1, "category_id": c, "iscrowd": 0} for c, b in objs]}
        for i, objs in GT.items()
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["RBC", "WBC"])
    try:
        with pytest.raises(ValueError, match="output_dir"):
            COCOEvaluator(name)
        res = _run(COCOEvaluator(name, output_dir=str(tmp_path)), _perfect())["bbox"]
        assert res["AP"] == pytest.approx(100.0)
        assert res["AP-WBC"] == pytest.approx(100.0)
        assert (tmp_path / f"{name}_coco_format.json").is_file()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_instances_to_coco_json_converts_to_xywh():
    inst = _instances([(1, 0.5, [10, 20, 40, 60]), (0, 0.25, [0, 0, 1, 2])])
    out = instances_to_coco_json(inst, 7)
    assert out == [
        {"image_id": 7, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5},
        {"image_id": 7, "category_id": 0, "bbox": [0.0, 0.0, 1.0, 2.0], "score": 0.25},
    ]
    assert instances_to_coco_json(_instances([]), 7) == []
