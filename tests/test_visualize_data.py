"""``tools/visualize_data.py`` on the bundled BCCD data: raw annotations and the train mapper's output."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from common.utils.visualizer import Visualizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import visualize_data  # noqa: E402

CLASSES = ["RBC", "WBC", "Platelets"]


def _record_labels(monkeypatch):
    calls = []
    original = Visualizer.overlay_instances

    def spy(self, **kwargs):
        calls.append(list(kwargs.get("labels") or []))
        return original(self, **kwargs)

    monkeypatch.setattr(Visualizer, "overlay_instances", spy)
    return calls


def test_annotation_source(tmp_path, bccd_root, monkeypatch):
    calls = _record_labels(monkeypatch)
    out = tmp_path / "vis"
    written = visualize_data.main([
        "--config-file", str(REPO / "projects/OneNet/configs/onenet.bccd.res18.yaml"), "--source", "annotation",
        "--output", str(out), "--num-images", "2",
    ])
    coco = json.loads((bccd_root / "annotations_train.json").read_text())
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert [Path(p).name for p in written] == [im["file_name"] for im in coco["images"][:2]]
    for path, im, labels in zip(written, coco["images"][:2], calls):
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert sorted(labels) == sorted(cats[a["category_id"]] for a in anns)  # class names, one per box
        drawn = cv2.imread(path)
        raw = cv2.imread(str(bccd_root / "images" / im["file_name"]))
        assert drawn.shape == raw.shape  # original resolution
        # the outline of the first box is drawn: its top edge changed colour
        x, y, w, h = (int(round(v)) for v in anns[0]["bbox"])
        edge = np.abs(drawn[y, x + 2: x + w - 2].astype(int) - raw[y, x + 2: x + w - 2].astype(int)).mean()
        assert edge > 20


def test_dataloader_source_uses_the_project_mapper(tmp_path, monkeypatch):
    calls = _record_labels(monkeypatch)
    out = tmp_path / "aug"
    written = visualize_data.main([
        "--config-file", str(REPO / "projects/CenterNet/configs/centernet.bccd.res18.yaml"), "--source", "dataloader",
        "--output", str(out), "--num-images", "3", "SOLVER.IMS_PER_BATCH", "2",
    ])
    assert len(written) == 3 and all(Path(p).is_file() for p in written)
    for path in written:
        # CenterNet's train mapper warps every image to INPUT.CENTERNET.TRAIN_SIZE (256, 256)
        assert cv2.imread(path).shape == (256, 256, 3)
    assert all(set(labels) <= set(CLASSES) for labels in calls)
    assert sum(len(labels) for labels in calls) > 0
