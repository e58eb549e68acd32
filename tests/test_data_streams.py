"""Loader objects survive spawn/forkserver pickling, worker errors reach the main process, and the
training stream is a function of the seed and the position only (so a resumed run continues it)."""
import itertools
import multiprocessing as mp
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.data import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    DatasetMapper,
    DetrDatasetMapper,
    MapDataset,
    ToIterableDataset,
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    set_train_loader_start,
)
from common.data.samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler


def _record(i, landscape=True):
    return {"image_id": i, "width": 16 if landscape else 8, "height": 8 if landscape else 16}


def _draw(d):
    # A "mapper" whose output shows its index and one draw from each RNG it may use.
    return {
        "image_id": d["image_id"],
        "width": d["width"],
        "height": d["height"],
        "r": (float(np.random.rand()), float(torch.rand(()))),
    }


def _raise_on_3(d):
    if d["image_id"] == 3:
        raise FileNotFoundError("image 3: cannot read tiny/3.jpg")
    return d


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _ids(batches):
    return [[d["image_id"] for d in b] for b in batches]


# ----------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_every_dataset_wrapper_and_mapper_pickles(method):
    cfg = get_cfg()
    cfg.INPUT.CROP.ENABLED = True
    records = [_record(i) for i in range(5)]
    objects = [
        DatasetFromList(records),
        DatasetFromList(records, serialize=False),
        MapDataset(DatasetFromList(records), _draw),
        ToIterableDataset(MapDataset(DatasetFromList(records), _draw), TrainingSampler(5, seed=1), chunk_size=2, seed=3),
        MapDataset(ToIterableDataset(DatasetFromList(records), TrainingSampler(5, seed=1)), _draw),
        AspectRatioGroupedDataset(ToIterableDataset(DatasetFromList(records), TrainingSampler(5, seed=1)), 2),
        TrainingSampler(5, seed=1),
        RepeatFactorTrainingSampler(torch.ones(5), seed=1),
        InferenceSampler(5),
        DatasetMapper(cfg, True),
        DetrDatasetMapper(cfg, True),
    ]
    # spawn and forkserver send a worker's dataset with multiprocessing's ForkingPickler.
    assert method in mp.get_all_start_methods()
    for obj in objects:
        clone = pickle.loads(ForkingPickler.dumps(obj))
        assert type(clone) is type(obj)
    # Map-style wrappers keep their content through a pickle round trip.
    clone = pickle.loads(pickle.dumps(objects[2]))
    assert [clone[i]["image_id"] for i in range(5)] == list(range(5))


def test_spawned_workers_load_the_train_stream():
    records = [_record(i) for i in range(6)]
    loader = build_batch_data_loader(
        MapDataset(DatasetFromList(records), _draw), TrainingSampler(6, seed=0), 2, num_workers=2, seed=5
    )
    loader.multiprocessing_context = "spawn"
    spawned = _ids(_take(loader, 4))
    in_process = _ids(_take(build_batch_data_loader(
        MapDataset(DatasetFromList(records), _draw), TrainingSampler(6, seed=0), 2, num_workers=0, seed=5
    ), 4))
    assert spawned == in_process


def test_worker_error_reaches_the_main_process_with_its_traceback():
    loader = build_detection_test_loader(
        [_record(i) for i in range(6)], mapper=_raise_on_3, num_workers=2
    )
    loader.multiprocessing_context = "spawn"
    with pytest.raises(FileNotFoundError, match="tiny/3.jpg"):
        list(loader)


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("grouping", [False, True])
def test_stream_does_not_depend_on_the_number_of_workers(grouping):
    records = [_record(i, landscape=i % 3 != 0) for i in range(7)]

    def batches(workers):
        loader = build_batch_data_loader(
            MapDataset(DatasetFromList(records), _draw), TrainingSampler(7, seed=2), 3,
            aspect_ratio_grouping=grouping, num_workers=workers, seed=11,
        )
        return _take(loader, 5)

    a, b = batches(0), batches(2)
    assert _ids(a) == _ids(b)
    assert [[d["r"] for d in x] for x in a] == [[d["r"] for d in x] for x in b]  # same augmentation draws
    if not grouping:
        # Consecutive positions per batch: the first k batches are exactly the first 3k stream elements.
        stream = list(itertools.islice(iter(TrainingSampler(7, seed=2)), 15))
        assert sum(_ids(a), []) == stream


@pytest.mark.parametrize("grouping", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_the_uninterrupted_one(grouping, workers):
    # Mixed orientations: with grouping, partial buckets at the interruption must be replayed.
    records = [_record(i, landscape=i % 3 != 0) for i in range(7)]

    def loader():
        return build_detection_train_loader(
            records, mapper=_draw, sampler=TrainingSampler(7, seed=4), total_batch_size=2,
            aspect_ratio_grouping=grouping, num_workers=workers, seed=9,
        )

    full = _take(loader(), 9)
    resumed_loader = loader()
    assert set_train_loader_start(resumed_loader, 4) is True
    resumed = _take(resumed_loader, 5)
    assert _ids(resumed) == _ids(full[4:])
    assert [[d["r"] for d in b] for b in resumed] == [[d["r"] for d in b] for b in full[4:]]


def test_grouped_stream_without_sizes_is_reported_approximate():
    loader = build_batch_data_loader(
        MapDataset(DatasetFromList([_record(i) for i in range(4)]), _draw), TrainingSampler(4, seed=0), 2,
        aspect_ratio_grouping=True,
    )
    assert set_train_loader_start(loader, 3) is False


def test_main_process_augmentation_seeding_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    stream = ToIterableDataset(MapDataset(DatasetFromList([_record(i) for i in range(3)]), _draw),
                               TrainingSampler(3, seed=0), seed=1)
    it = iter(stream)
    first = [next(it) for _ in range(2)]
    assert torch.equal(torch.rand(3), expected)
    # Element seeds are a function of (seed, position): the same position draws the same numbers.
    again = iter(ToIterableDataset(MapDataset(DatasetFromList([_record(i) for i in range(3)]), _draw),
                                   TrainingSampler(3, seed=0), seed=1))
    assert [next(again)["r"] for _ in range(2)] == [d["r"] for d in first]
