"""Datasets declared in the config, one class count per project, and bad boxes (NaN/inf)."""
import json
import logging
import math

import pytest
import torch

from common.config import get_cfg
from common.data import DatasetCatalog, MetadataCatalog, num_classes_key, register_datasets_from_config, resolve_num_classes
from common.data.datasets import load_coco_json
from common.engine.defaults import apply_checkpoint_metadata, check_output_dir
from projects.CenterNet.centernet import add_centernet_config
from projects.OneNet.onenet import add_onenet_config
from projects.SparseRCNN.sparsercnn import add_sparsercnn_config


def _coco(tmp_path, name, classes=("cell", "blob"), bbox=(1, 2, 5, 6)):
    (tmp_path / "img").mkdir(exist_ok=True)
    data = {
        "images": [{"id": 10, "file_name": "a.jpg", "height": 20, "width": 30}],
        "annotations": [
            {"id": 100, "image_id": 10, "bbox": list(bbox), "category_id": 1, "iscrowd": 0, "area": 30},
            {"id": 101, "image_id": 10, "bbox": [3, 3, 4, 4], "category_id": 2, "iscrowd": 0, "area": 16},
        ],
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))  # NaN/inf are written as the literals Python's json reads back
    return str(path), str(tmp_path / "img")


@pytest.fixture
def cleanup():
    names = []
    yield names
    for n in names:
        if n in DatasetCatalog:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_coco_json_datasets_are_registered_from_the_config(tmp_path, cleanup):
    json_file, root = _coco(tmp_path, "mine")
    cleanup.append("_cfg_mine")
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.COCO_JSON", str(((("_cfg_mine", json_file, root)),))])
    assert register_datasets_from_config(cfg) == ["_cfg_mine"]
    assert register_datasets_from_config(cfg) == ["_cfg_mine"]  # idempotent (every process calls it)
    assert [len(d["annotations"]) for d in DatasetCatalog.get("_cfg_mine")] == [2]
    assert MetadataCatalog.get("_cfg_mine").thing_classes == ["cell", "blob"]


def test_coco_json_errors_name_the_key(tmp_path, cleanup):
    json_file, root = _coco(tmp_path, "mine")
    cleanup.append("_cfg_mine2")
    cfg = get_cfg()
    cfg.DATASETS.COCO_JSON = ("_cfg_mine2", json_file, root)  # one triple without the outer tuple
    with pytest.raises(ValueError, match="DATASETS.COCO_JSON must be a tuple of.*trailing comma"):
        register_datasets_from_config(cfg)
    cfg.DATASETS.COCO_JSON = (("_cfg_mine2", str(tmp_path / "missing.json"), root),)
    with pytest.raises(FileNotFoundError, match="_cfg_mine2.*missing.json"):
        register_datasets_from_config(cfg)
    cfg.DATASETS.COCO_JSON = (("bccd_train", json_file, root),)
    with pytest.raises(ValueError, match="already registered"):
        register_datasets_from_config(cfg)


@pytest.mark.parametrize(
    "adder, arch, key",
    [
        (add_sparsercnn_config, "SparseRCNN", "MODEL.SparseRCNN.NUM_CLASSES"),
        (add_onenet_config, "OneNet", "MODEL.OneNet.NUM_CLASSES"),
        (add_centernet_config, "CenterNet", "MODEL.CENTERNET.NUM_CLASSES"),
    ],
)
def test_one_class_count_per_project_checked_against_the_dataset(adder, arch, key):
    cfg = get_cfg()
    adder(cfg)
    cfg.MODEL.META_ARCHITECTURE = arch
    assert num_classes_key(cfg) == key
    cfg.DATASETS.TRAIN = ("bccd_train",)  # RBC, WBC, Platelets
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + r" = 80 but dataset 'bccd_train' has 3 classes"):
        resolve_num_classes(cfg)
    cfg.MODEL.NUM_CLASSES_FROM_DATASET = True
    resolve_num_classes(cfg)
    node, leaf = key.rsplit(".", 1)
    assert cfg.MODEL[node.split(".")[1]][leaf] == 3
    # detectron2's keys are read by nothing here: setting them is an error, not a silent no-op.
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.NUM_CLASSES = 3 is not read by .*" + arch):
        resolve_num_classes(cfg)


def test_eval_and_demo_take_the_class_count_from_the_checkpoint(tmp_path):
    cfg = get_cfg()
    add_onenet_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "OneNet"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {}, "metadata": {"thing_classes": ["a", "b", "c", "d", "e"],
                                           "num_classes_key": "MODEL.OneNet.NUM_CLASSES"}}, path)
    apply_checkpoint_metadata(cfg, str(path))
    assert cfg.MODEL.OneNet.NUM_CLASSES == 5
    cfg.MODEL.OneNet.NUM_CLASSES = 7  # given on the command line: the user's value wins
    apply_checkpoint_metadata(cfg, str(path), explicit_keys=["MODEL.OneNet.NUM_CLASSES"])
    assert cfg.MODEL.OneNet.NUM_CLASSES == 7


def test_output_dir_of_another_run_warns_and_refuses_resume(tmp_path, caplog):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN = ("bccd_train",)
    check_output_dir(cfg, resume=True)  # empty directory: nothing to say
    (tmp_path / "config.yaml").write_text(cfg.dump())
    (tmp_path / "model_0000099.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    check_output_dir(cfg, resume=True)  # the same run: resume it
    cfg.DATASETS.TRAIN = ("my_cells",)
    with caplog.at_level(logging.WARNING):
        check_output_dir(cfg, resume=False)
    assert "holds the checkpoints of another run" in caplog.text and "bccd_train" in caplog.text
    with pytest.raises(ValueError, match=r"--resume: OUTPUT_DIR .*bccd_train.*my_cells"):
        check_output_dir(cfg, resume=True)


@pytest.mark.parametrize("bad", [(math.nan, 2, 5, 6), (1, math.inf, 5, 6), (1, 2, math.nan, 6)])
def test_non_finite_box_is_reported_and_dropped_in_training_and_evaluation(tmp_path, bad, caplog, cleanup):
    from common.data.datasets import register_coco_instances
    from common.evaluation import COCOEvaluator

    json_file, root = _coco(tmp_path, "nan", bbox=bad)
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, root, "_nan")
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1]  # only annotation 101 is left
    assert "image id 10, annotation id 100" in caplog.text
    cleanup.append("_nan_eval")
    register_coco_instances("_nan_eval", {}, json_file, root)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluator = COCOEvaluator("_nan_eval", output_dir=str(tmp_path / "eval"))
    assert [a["id"] for a in evaluator._coco_api.dataset["annotations"]] == [101]
    assert evaluator._coco_api.getAnnIds(imgIds=[10]) == [101]
    assert "annotation id 100" in caplog.text


def test_class_count_key_of_a_project_with_several_meta_architectures():
    from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config

    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    for arch, key in [("FCOS", "MODEL.FCOS.NUM_CLASSES"), ("ATSS", "MODEL.ATSS.NUM_CLASSES"),
                      ("VFNet", "MODEL.VFNET.NUM_CLASSES")]:
        cfg.MODEL.META_ARCHITECTURE = arch
        assert num_classes_key(cfg) == key
