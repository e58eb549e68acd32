"""Mappers, samplers, dataset wrappers and loaders."""
import itertools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import common.data.transforms as T
from common.config import get_cfg
from common.data import (
    AspectRatioGroupedDataset,
    DatasetCatalog,
    DatasetFromList,
    DatasetMapper,
    DetrDatasetMapper,
    MapDataset,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from common.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler
from common.structures import BoxMode
from common.utils import comm


@pytest.fixture
def bccd_record():
    return DatasetCatalog.get("bccd_val")[0]


@pytest.fixture
def tiny_images(tmp_path):
    """Two landscape (8x16) and two portrait (16x8) jpgs with dataset dicts."""
    dicts = []
    for i, (h, w) in enumerate([(8, 16), (16, 8), (8, 16), (16, 8)]):
        path = tmp_path / f"t{i}.jpg"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(path)
        annos = [] if i == 3 else [{"bbox": [1, 1, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}]
        dicts.append({"file_name": str(path), "height": h, "width": w, "image_id": i, "annotations": annos})
    return dicts


@pytest.fixture
def toy_dataset(tiny_images):
    DatasetCatalog.register("_t_tiny", lambda: tiny_images)
    MetadataCatalog.get("_t_tiny").thing_classes = ["thing"]
    yield "_t_tiny"
    DatasetCatalog.remove("_t_tiny")
    MetadataCatalog.remove("_t_tiny")


# ----------------------------------------------------------------------------- mappers
def test_dataset_mapper_resize_and_flip_boxes(bccd_record):
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(240, 1000, "choice"), T.RandomFlip(prob=1.0)],
        image_format="RGB",
    )
    out = mapper(bccd_record)
    assert out["image"].shape == (3, 240, 320) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (480, 640)  # original size kept
    assert "annotations" not in out and "annotations" in bccd_record  # input not modified
    inst = out["instances"]
    assert inst.image_size == (240, 320) and len(inst) == len(bccd_record["annotations"])
    x, y, w, h = bccd_record["annotations"][0]["bbox"]
    # XYWH -> XYXY, scale 0.5, then flip in a 320-wide image
    expected = [320 - (x + w) / 2, y / 2, 320 - x / 2, (y + h) / 2]
    np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), expected, rtol=1e-6)
    assert inst.gt_classes.dtype == torch.int64
    assert inst.gt_classes.tolist() == [a["category_id"] for a in bccd_record["annotations"]]
    # the image matches a direct flip of the resized image
    img = np.asarray(Image.open(bccd_record["file_name"]).convert("RGB").resize((320, 240), Image.BILINEAR))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img[:, ::-1])


def test_dataset_mapper_test_mode_drops_annotations(bccd_record):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 120
    cfg.INPUT.FORMAT = "BGR"
    out = DatasetMapper(cfg, is_train=False)(bccd_record)
    assert out["image"].shape == (3, 120, 160)
    assert "annotations" not in out and "instances" not in out


def test_mapper_empty_and_crowd_annotations(tiny_images):
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    out = mapper(tiny_images[3])  # no annotations
    assert out["instances"].gt_boxes.tensor.shape == (0, 4) and len(out["instances"]) == 0
    d = dict(tiny_images[0])
    d["annotations"] = [
        {"bbox": [1, 1, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1},
        {"bbox": [2, 2, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0},
        {"bbox": [20, 2, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},  # fully outside: empty
    ]
    inst = mapper(d)["instances"]
    assert inst.gt_boxes.tensor.tolist() == [[2, 2, 5, 5]]


def test_mapper_errors_name_the_file(tmp_path, tiny_images):
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        mapper({"file_name": str(tmp_path / "gone.jpg"), "height": 8, "width": 16, "annotations": []})
    bad_size = dict(tiny_images[0], height=9)
    with pytest.raises(ValueError, match="t0.jpg"):
        mapper(bad_size)


def _crop_cfg():
    cfg = get_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (96, 128)
    cfg.INPUT.MAX_SIZE_TRAIN = 200
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = (384, 600)
    return cfg


def test_detr_mapper_from_config_structure():
    mapper = DetrDatasetMapper(_crop_cfg(), is_train=True)
    assert [type(a) for a in mapper.augmentation] == [T.RandomFlip, T.ResizeShortestEdge]
    crop = mapper.augmentation_with_crop
    assert [type(a) for a in crop] == [T.RandomFlip, T.ResizeShortestEdge, T.RandomCrop, T.ResizeShortestEdge]
    assert list(crop[1].short_edge_length) == [400, 500, 600] and not crop[1].is_range
    assert crop[2].crop_type == "absolute_range" and tuple(crop[2].crop_size) == (384, 600)
    assert crop[3] is mapper.augmentation[-1]
    test_mapper = DetrDatasetMapper(_crop_cfg(), is_train=False)
    assert test_mapper.augmentation_with_crop is None
    assert [type(a) for a in test_mapper.augmentation] == [T.ResizeShortestEdge]
    no_crop = _crop_cfg()
    no_crop.INPUT.CROP.ENABLED = False
    assert DetrDatasetMapper(no_crop, is_train=True).augmentation_with_crop is None


def test_detr_mapper_crop_branch_outputs(bccd_record):
    np.random.seed(3)
    mapper = DetrDatasetMapper(_crop_cfg(), is_train=True)
    mapper.crop_prob = 1.0  # always take the crop branch
    for _ in range(3):
        out = mapper(bccd_record)
        c, h, w = out["image"].shape
        assert c == 3 and min(h, w) in (96, 128) and max(h, w) <= 200
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_detr_mapper_branch_probability(tiny_images):
    seen = []
    mapper = DetrDatasetMapper(
        is_train=True,
        augmentation=[T.Resize((4, 4))],
        augmentation_with_crop=[T.Resize((2, 2))],
        image_format="RGB",
    )
    np.random.seed(0)
    for _ in range(200):
        seen.append(mapper(tiny_images[0])["image"].shape[1])
    frac_crop = seen.count(2) / len(seen)
    assert set(seen) == {2, 4} and 0.4 < frac_crop < 0.6


# ----------------------------------------------------------------------------- dataset dicts
def test_one_dataset_name_as_string_is_accepted_but_not_in_the_config():
    # detectron2 accepts get_detection_dataset_dicts("name"); DATASETS.TRAIN as a string stays an error.
    assert len(get_detection_dataset_dicts("bccd_val", filter_empty=False)) == len(
        get_detection_dataset_dicts(["bccd_val"], filter_empty=False)
    )
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = "bccd_train"
    with pytest.raises(TypeError, match="DATASETS.TRAIN"):
        build_detection_train_loader(cfg)


def test_empty_and_unknown_datasets():
    DatasetCatalog.register("_t_empty", lambda: [])
    try:
        with pytest.raises(ValueError, match="_t_empty"):
            get_detection_dataset_dicts(["_t_empty"])
    finally:
        DatasetCatalog.remove("_t_empty")
    with pytest.raises(KeyError, match="bccd_train"):  # lists the registered names
        get_detection_dataset_dicts(["_t_nonexistent"])


def test_filter_empty_and_histogram(toy_dataset, caplog):
    with caplog.at_level(logging.INFO):
        assert len(get_detection_dataset_dicts([toy_dataset], filter_empty=True)) == 3
    assert len(get_detection_dataset_dicts([toy_dataset], filter_empty=False)) == 4


def test_histogram_rejects_out_of_range_class():
    from common.data.build import print_instances_class_histogram

    with pytest.raises(ValueError, match="category_id=5"):
        print_instances_class_histogram([{"file_name": "f", "annotations": [{"category_id": 5}]}], ["a", "b"])


# ----------------------------------------------------------------------------- loaders
def test_train_loader_aspect_ratio_grouping(toy_dataset):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (toy_dataset,)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (8,)
    cfg.INPUT.FORMAT = "RGB"
    loader = build_detection_train_loader(cfg)
    batches = list(itertools.islice(iter(loader), 6))  # more than one epoch: infinite
    for batch in batches:
        assert isinstance(batch, list) and len(batch) == 2
        orient = {d["width"] > d["height"] for d in batch}
        assert len(orient) == 1  # never mixes landscape and portrait
        for d in batch:
            assert d["image"].shape[0] == 3 and min(d["image"].shape[1:]) == 8
    seen = {d["image_id"] for b in batches for d in b}
    assert seen == {0, 1, 2, 3}


def test_train_loader_explicit_args_without_grouping(tiny_images):
    loader = build_detection_train_loader(
        tiny_images, mapper=lambda d: d["image_id"], total_batch_size=3, aspect_ratio_grouping=False,
        sampler=TrainingSampler(len(tiny_images), seed=1),
    )
    batches = list(itertools.islice(iter(loader), 4))
    assert all(len(b) == 3 for b in batches)
    flat = [i for b in batches for i in b]
    assert sorted(flat[:4]) == [0, 1, 2, 3] and sorted(flat[4:8]) == [0, 1, 2, 3]  # one permutation per epoch
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        build_detection_train_loader(tiny_images, mapper=None, total_batch_size=0)


def test_train_loader_batch_not_divisible(monkeypatch, tiny_images):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"IMS_PER_BATCH = 3.*\(2\)"):
        build_detection_train_loader(tiny_images, mapper=None, total_batch_size=3, sampler=TrainingSampler(4, seed=0))


def test_test_loader_each_image_once_in_order():
    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    loader = build_detection_test_loader(cfg, "bccd_val", mapper=lambda d: d["image_id"])
    ids = [b[0] for b in loader]
    expected = [d["image_id"] for d in DatasetCatalog.get("bccd_val")]
    assert ids == expected and len(ids) == 72 and ids == sorted(ids)
    loader = build_detection_test_loader(dataset=list(range(5)), mapper=None, batch_size=2)
    assert [b for b in loader] == [[0, 1], [2, 3], [4]]


# ----------------------------------------------------------------------------- samplers
def test_training_sampler_determinism():
    a = list(itertools.islice(TrainingSampler(10, seed=7), 30))
    torch.manual_seed(123)  # the global RNG must not matter
    np.random.seed(5)
    b = list(itertools.islice(TrainingSampler(10, seed=7), 30))
    c = list(itertools.islice(TrainingSampler(10, seed=8), 30))
    assert a == b and a != c
    for epoch in range(3):
        assert sorted(a[10 * epoch : 10 * epoch + 10]) == list(range(10))
    assert a[:10] != a[10:20]  # reshuffled every epoch
    assert list(itertools.islice(TrainingSampler(3, shuffle=False), 7)) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        TrainingSampler(0)


def test_training_sampler_rank_slicing(monkeypatch):
    full = list(itertools.islice(TrainingSampler(10, seed=3), 20))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    rank1 = list(itertools.islice(TrainingSampler(10, seed=3), 10))
    assert rank1 == full[1::2]


def test_inference_sampler_shards(monkeypatch):
    assert list(InferenceSampler(5)) == [0, 1, 2, 3, 4]
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    shards = []
    for r in range(3):
        monkeypatch.setattr(comm, "get_rank", lambda r=r: r)
        shards.append(list(InferenceSampler(10)))
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_repeat_factor_sampler():
    dicts = [{"annotations": [{"category_id": c} for c in cats]} for cats in ([0], [0], [1], [0, 1], [])]
    # f0 = 3/5, f1 = 2/5; t = 1: r0 = sqrt(5/3), r1 = sqrt(5/2); empty image -> 1
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 1.0)
    r0, r1 = np.sqrt(5 / 3), np.sqrt(5 / 2)
    np.testing.assert_allclose(factors.numpy(), [r0, r0, r1, r1, 1.0], rtol=1e-6)
    sampler = RepeatFactorTrainingSampler(torch.tensor([1.0, 2.0, 3.0]), seed=0, shuffle=False)
    assert list(itertools.islice(sampler, 12)) == [0, 1, 1, 2, 2, 2] * 2
    sampler = RepeatFactorTrainingSampler(torch.tensor([1.0] * 100 + [1.5] * 100), seed=0)
    counts = np.bincount(list(itertools.islice(sampler, 10000)), minlength=200)
    assert abs(counts[100:].sum() / counts[:100].sum() - 1.5) < 0.05


# ----------------------------------------------------------------------------- wrappers
def test_dataset_from_list_serialization_and_copy():
    data = [{"a": [1, 2]}, {"b": "x"}, {}]
    ds = DatasetFromList(data)
    assert len(ds) == 3 and [ds[i] for i in range(3)] == data
    ds[0]["a"].append(3)  # deserialised copies: the source is untouched
    assert ds[0] == {"a": [1, 2]}
    ds2 = DatasetFromList(data, copy=True, serialize=False)
    ds2[0]["a"].append(3)
    assert data[0] == {"a": [1, 2]}
    assert DatasetFromList(data, copy=False, serialize=False)[0] is data[0]


def test_map_dataset_retries_on_none(caplog):
    ds = MapDataset(DatasetFromList(list(range(5))), lambda x: None if x < 4 else x * 10)
    with caplog.at_level(logging.WARNING):
        assert ds[0] == 40
    with pytest.raises(RuntimeError):
        MapDataset(DatasetFromList([1, 2]), lambda x: None)[0]


def test_aspect_ratio_grouped_dataset():
    items = [{"width": 2, "height": 1, "i": 0}, {"width": 1, "height": 2, "i": 1},
             {"width": 1, "height": 1, "i": 2}, {"width": 3, "height": 1, "i": 3}]
    batches = list(AspectRatioGroupedDataset(items, 2))
    assert [[d["i"] for d in b] for b in batches] == [[1, 2], [0, 3]]
