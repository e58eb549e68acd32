"""Catalogues, COCO json loading (incl. bad inputs), builtin registration and image reading."""
import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from common.data import DatasetCatalog, MetadataCatalog
from common.data import detection_utils as utils
from common.data.catalog import Metadata
from common.data.datasets import convert_to_coco_dict, convert_to_coco_json, load_coco_json, register_coco_instances
from common.data.datasets.builtin_meta import COCO_CATEGORIES
from common.structures import BoxMode


@pytest.fixture
def registered():
    """Register names through this fixture; they are removed afterwards."""
    names = []

    def _register(name, func):
        DatasetCatalog.register(name, func)
        names.append(name)

    yield _register
    for n in names:
        DatasetCatalog.remove(n)
        if n in MetadataCatalog:
            MetadataCatalog.remove(n)


def _write_coco(tmp_path, images, annotations, categories=None, name="ann.json"):
    categories = categories or [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def _img_entry(i, w=16, h=8):
    return {"id": i, "file_name": f"im{i}.jpg", "width": w, "height": h}


# ----------------------------------------------------------------------------- catalogues
def test_dataset_catalog_semantics(registered):
    registered("_t_cat", lambda: [{"a": 1}])
    assert "_t_cat" in DatasetCatalog.list()
    assert DatasetCatalog.get("_t_cat") == [{"a": 1}]
    with pytest.raises(AssertionError, match="already registered"):
        DatasetCatalog.register("_t_cat", lambda: [])
    with pytest.raises(KeyError, match="not registered.*_t_cat"):
        DatasetCatalog.get("_t_missing")
    with pytest.raises(TypeError):
        DatasetCatalog.register("_t_bad", [1, 2])


def test_dataset_catalog_remove():
    DatasetCatalog.register("_t_rm", lambda: [])
    DatasetCatalog.remove("_t_rm")
    assert "_t_rm" not in DatasetCatalog.list()


def test_metadata_set_once_semantics():
    meta = Metadata(name="_t_meta")
    meta.thing_classes = ["x", "y"]
    meta.thing_classes = ["x", "y"]  # same value: fine
    with pytest.raises(AssertionError, match="cannot be set to a different value"):
        meta.thing_classes = ["y"]
    assert meta.set(evaluator_type="coco") is meta
    assert meta.as_dict() == {"name": "_t_meta", "thing_classes": ["x", "y"], "evaluator_type": "coco"}
    assert meta.get("json_file") is None and meta.get("json_file", "d") == "d"
    with pytest.raises(AttributeError, match="json_file.*_t_meta"):
        meta.json_file
    assert meta.class_names == ["x", "y"]  # old name still readable


def test_metadata_catalog_is_a_singleton_per_name():
    m = MetadataCatalog.get("_t_meta_cat")
    assert MetadataCatalog.get("_t_meta_cat") is m and m.name == "_t_meta_cat"
    MetadataCatalog.remove("_t_meta_cat")
    assert "_t_meta_cat" not in MetadataCatalog.list()


# ----------------------------------------------------------------------------- builtins
def test_builtin_registration(bccd_root):
    names = DatasetCatalog.list()
    for n in ["coco_2017_train", "coco_2017_val", "bccd_train", "bccd_val", "bccd_all"]:
        assert n in names
    for n in ["bccd_train", "bccd_val", "bccd_all"]:
        meta = MetadataCatalog.get(n)
        assert os.path.isfile(meta.json_file) and os.path.isdir(meta.image_root)
        assert os.path.samefile(meta.image_root, bccd_root / "images")
        assert meta.thing_classes == ["RBC", "WBC", "Platelets"]
        assert meta.evaluator_type == "coco"
    coco = MetadataCatalog.get("coco_2017_val")
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    assert coco.json_file == os.path.join(root, "coco/annotations/instances_val2017.json")
    assert coco.image_root == os.path.join(root, "coco/val2017")
    assert len(coco.thing_classes) == 80 and coco.thing_classes[0] == "person"
    assert coco.thing_dataset_id_to_contiguous_id[90] == 79


def test_bccd_found_from_another_cwd(tmp_path, monkeypatch):
    # Paths are absolute (resolved from the package location), so loading works from any cwd.
    meta = MetadataCatalog.get("bccd_val")
    assert os.path.isabs(meta.json_file) and os.path.isabs(meta.image_root)
    monkeypatch.chdir(tmp_path)
    dicts = DatasetCatalog.get("bccd_val")
    assert len(dicts) == 72 and sum(len(d["annotations"]) for d in dicts) == 964
    assert os.path.isfile(dicts[0]["file_name"])


# ----------------------------------------------------------------------------- load_coco_json
def test_load_bccd_train(bccd_root):
    json_file = bccd_root / "annotations_train.json"
    raw = json.loads(json_file.read_text())
    dicts = DatasetCatalog.get("bccd_train")
    assert len(dicts) == 292
    assert sum(len(d["annotations"]) for d in dicts) == 3922
    # contiguous ids 0..2 = json id - 1, class counts preserved
    counts = Counter(a["category_id"] for d in dicts for a in d["annotations"])
    raw_counts = Counter(a["category_id"] for a in raw["annotations"])
    assert counts == {k - 1: v for k, v in raw_counts.items()}
    first = dicts[0]
    assert first["file_name"].endswith(raw["images"][0]["file_name"]) and os.path.isfile(first["file_name"])
    assert (first["height"], first["width"]) == (480, 640)
    raw_first = [a for a in raw["annotations"] if a["image_id"] == first["image_id"]]
    assert [a["bbox"] for a in first["annotations"]] == [a["bbox"] for a in raw_first]
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in first["annotations"])
    assert MetadataCatalog.get("bccd_train").thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}


def test_non_contiguous_ids_and_empty_images_kept(tmp_path):
    cats = [{"id": 10, "name": "ten"}, {"id": 5, "name": "five"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [1, 1, 4, 4], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [2, 2, 4, 4], "iscrowd": 1}]
    path = _write_coco(tmp_path, [_img_entry(1), _img_entry(2)], anns, cats)
    dicts = load_coco_json(path, str(tmp_path), "_t_noncontig")
    try:
        meta = MetadataCatalog.get("_t_noncontig")
        assert meta.thing_classes == ["five", "ten"]
        assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 10: 1}
        assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 0]
        assert dicts[0]["annotations"][1]["iscrowd"] == 1  # crowd kept, as detectron2
        assert dicts[1]["annotations"] == [] and dicts[1]["image_id"] == 2
    finally:
        MetadataCatalog.remove("_t_noncontig")
    # without a dataset name the json ids are kept
    assert [a["category_id"] for a in load_coco_json(path, str(tmp_path))[0]["annotations"]] == [10, 5]


def test_zero_size_boxes_dropped_with_warning(tmp_path, caplog):
    anns = [{"id": 11, "image_id": 3, "category_id": 1, "bbox": [1, 1, 0, 4]},
            {"id": 12, "image_id": 3, "category_id": 1, "bbox": [1, 1, 4, -2]},
            {"id": 13, "image_id": 3, "category_id": 2, "bbox": [1, 1, 4, 4]}]
    path = _write_coco(tmp_path, [_img_entry(3)], anns)
    with caplog.at_level(logging.WARNING, logger="common.data.datasets.coco"):
        dicts = load_coco_json(path, str(tmp_path))
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[1, 1, 4, 4]]
    text = caplog.text
    assert "image id 3, annotation id 11" in text and "annotation id 12" in text and path in text
    assert "dropped 2 annotation(s)" in text


def test_unknown_category_raises(tmp_path):
    anns = [{"id": 21, "image_id": 4, "category_id": 7, "bbox": [1, 1, 4, 4]}]
    path = _write_coco(tmp_path, [_img_entry(4)], anns)
    with pytest.raises(ValueError, match=r"image id 4, annotation id 21: category_id=7") as e:
        load_coco_json(path, str(tmp_path))
    assert path in str(e.value)


def test_bad_json_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_coco_json(str(tmp_path / "missing.json"), str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_coco_json(str(bad), str(tmp_path))
    path = _write_coco(tmp_path, [_img_entry(1)], [{"id": 1, "image_id": 1, "category_id": 1}], name="nobox.json")
    with pytest.raises(ValueError, match="annotation id 1: 'bbox'"):
        load_coco_json(path, str(tmp_path))


def test_register_and_convert_to_coco_roundtrip(tmp_path, registered):
    cats = [{"id": 3, "name": "c3"}, {"id": 8, "name": "c8"}]
    anns = [{"id": 1, "image_id": 7, "category_id": 8, "bbox": [1.5, 2, 4, 6], "iscrowd": 0}]
    path = _write_coco(tmp_path, [_img_entry(7), _img_entry(9, 8, 16)], anns, cats)
    register_coco_instances("_t_roundtrip", {}, path, str(tmp_path))
    try:
        meta = MetadataCatalog.get("_t_roundtrip")
        assert meta.json_file == path and meta.evaluator_type == "coco"
        coco = convert_to_coco_dict("_t_roundtrip")
        assert coco["categories"] == [{"id": 3, "name": "c3"}, {"id": 8, "name": "c8"}]
        assert [im["id"] for im in coco["images"]] == [7, 9]
        (ann,) = coco["annotations"]
        assert ann["bbox"] == [1.5, 2, 4, 6] and ann["area"] == 24.0 and ann["category_id"] == 8
        assert ann["image_id"] == 7 and ann["iscrowd"] == 0
        out = tmp_path / "cache" / "conv.json"
        convert_to_coco_json("_t_roundtrip", str(out))
        assert json.loads(out.read_text())["annotations"][0]["bbox"] == [1.5, 2, 4, 6]
    finally:
        DatasetCatalog.remove("_t_roundtrip")
        MetadataCatalog.remove("_t_roundtrip")


def test_convert_xyxy_annotations(registered):
    registered("_t_xyxy", lambda: [{"file_name": "x.jpg", "image_id": 5, "height": 10, "width": 10,
                                    "annotations": [{"bbox": [1, 2, 5, 8], "bbox_mode": BoxMode.XYXY_ABS,
                                                     "category_id": 0}]}])
    MetadataCatalog.get("_t_xyxy").thing_classes = ["only"]
    coco = convert_to_coco_dict("_t_xyxy")
    assert coco["annotations"][0]["bbox"] == [1, 2, 4, 6] and coco["annotations"][0]["area"] == 24.0
    assert coco["categories"] == [{"id": 0, "name": "only"}]


def test_coco128_real_coco(coco128_root):
    dicts = load_coco_json(str(coco128_root / "annotations.json"), str(coco128_root / "images"), "_t_coco128")
    try:
        meta = MetadataCatalog.get("_t_coco128")
        assert meta.thing_classes == [c["name"] for c in COCO_CATEGORIES]
        assert meta.thing_dataset_id_to_contiguous_id == {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
        assert len(dicts) == 128
        raw = json.loads((coco128_root / "annotations.json").read_text())
        assert sum(len(d["annotations"]) for d in dicts) == sum(
            1 for a in raw["annotations"] if a["bbox"][2] > 0 and a["bbox"][3] > 0
        )
        assert all(0 <= a["category_id"] < 80 for d in dicts for a in d["annotations"])
        assert any(a["iscrowd"] for d in dicts for a in d["annotations"])
    finally:
        MetadataCatalog.remove("_t_coco128")


# ----------------------------------------------------------------------------- images
def test_read_image_formats(bccd_root):
    path = str(bccd_root / "images" / "BloodImage_00000.jpg")
    rgb = utils.read_image(path, format="RGB")
    bgr = utils.read_image(path, format="BGR")
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert utils.read_image(path, format="L").shape == (480, 640, 1)
    np.testing.assert_array_equal(utils.convert_image_to_rgb(bgr, "BGR"), rgb)
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        utils.read_image(path, format="NOT_A_MODE")


def test_read_image_missing_and_corrupt(tmp_path, bccd_root):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        utils.read_image(str(missing))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(utils.ImageReadError, match="garbage.jpg"):
        utils.read_image(str(garbage), "RGB")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((bccd_root / "images" / "BloodImage_00000.jpg").read_bytes()[:3000])
    with pytest.raises(OSError, match="truncated.jpg"):
        utils.read_image(str(truncated), "RGB")


def test_read_image_applies_exif_orientation(tmp_path):
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "exif.png"
    img.save(path, exif=exif)
    out = utils.read_image(str(path), "RGB")
    assert out.shape == (6, 4, 3)
    assert out[0, -1].tolist() == [255, 255, 255]  # top-left moved to top-right


def test_check_image_size():
    d = {"file_name": "some/file.jpg", "height": 10, "width": 20}
    utils.check_image_size(d, np.zeros((10, 20, 3)))
    with pytest.raises(utils.SizeMismatchError, match="some/file.jpg"):
        utils.check_image_size(d, np.zeros((20, 10, 3)))
    d2 = {"file_name": "x"}
    utils.check_image_size(d2, np.zeros((3, 5, 3)))
    assert (d2["height"], d2["width"]) == (3, 5)
