"""Dataset-dict loading and data loader construction (``detectron2/data/build.py``)."""
from __future__ import annotations

import itertools
import logging
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata
from tabulate import tabulate
from termcolor import colored

from common.config import configurable
from common.utils import comm
from common.utils.env import seed_all_rng
from common.utils.logger import log_first_n

from .catalog import DatasetCatalog, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .detection_utils import check_metadata_consistency
from .samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = [
    "build_batch_data_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "get_detection_dataset_dicts",
    "print_instances_class_histogram",
    "set_train_loader_start",
    "trivial_batch_collator",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(dataset_dicts: List[dict]) -> List[dict]:
    """Keep images having at least one non-crowd annotation (images without any are dropped)."""
    num_before = len(dataset_dicts)
    kept = [d for d in dataset_dicts if any(a.get("iscrowd", 0) == 0 for a in d["annotations"])]
    logger.info("Removed %d images with no usable annotations. %d images left.", num_before - len(kept), len(kept))
    return kept


def filter_images_with_few_keypoints(dataset_dicts: List[dict], min_keypoints_per_image: int) -> List[dict]:
    """Keep images with at least ``min_keypoints_per_image`` visible keypoints."""

    def visible_keypoints(d: dict) -> int:
        return sum(
            int((np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] > 0).sum())
            for a in d["annotations"]
            if "keypoints" in a
        )

    num_before = len(dataset_dicts)
    kept = [d for d in dataset_dicts if visible_keypoints(d) >= min_keypoints_per_image]
    logger.info("Removed %d images with fewer than %d keypoints.", num_before - len(kept), min_keypoints_per_image)
    return kept


def print_instances_class_histogram(dataset_dicts: List[dict], class_names: Sequence[str]) -> None:
    """Log a table of the number of non-crowd instances per category.

    Raises:
        ValueError: a ``category_id`` outside ``[0, len(class_names))`` (names the file).
    """
    num_classes = len(class_names)
    histogram = np.zeros((num_classes,), dtype=np.int64)
    for entry in dataset_dicts:
        classes = np.asarray(
            [a["category_id"] for a in entry["annotations"] if not a.get("iscrowd", 0)], dtype=np.int64
        )
        if len(classes):
            if classes.min() < 0 or classes.max() >= num_classes:
                raise ValueError(
                    f"Got an invalid category_id={int(classes.max() if classes.max() >= num_classes else classes.min())} "
                    f"for a dataset of {num_classes} classes (image {entry.get('file_name')})"
                )
            histogram += np.bincount(classes, minlength=num_classes)

    n_cols = min(6, len(class_names) * 2)

    def short_name(x: str) -> str:
        return x[:13] + ".." if len(x) > 13 else x

    cells: List[Any] = list(itertools.chain(*[[short_name(class_names[i]), int(v)] for i, v in enumerate(histogram)]))
    total = int(histogram.sum())
    cells.extend([None] * ((n_cols - len(cells) % n_cols) % n_cols))
    if num_classes > 1:
        cells.extend(["total", total])
    rows = itertools.zip_longest(*[cells[i::n_cols] for i in range(n_cols)])
    table = tabulate(
        rows, headers=["category", "#instances"] * (n_cols // 2), tablefmt="pipe", numalign="left", stralign="center"
    )
    log_first_n(
        logging.INFO,
        f"Distribution of instances among all {num_classes} categories:\n" + colored(table, "cyan"),
        key="message",
    )


def get_detection_dataset_dicts(
    names: Sequence[str],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
) -> List[dict]:
    """Load and concatenate the dataset dicts of registered datasets.

    Args:
        names: dataset names, a list/tuple such as ``("bccd_train",)`` (``DATASETS.TRAIN``), or
            one name.
        filter_empty: drop images without non-crowd annotations
            (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``).
        min_keypoints: drop images with fewer visible keypoints (0 = keep all).
        proposal_files: precomputed proposals (not supported; must be empty).

    Returns:
        the concatenated list of dicts. Logs the per-category instance histogram.

    Raises:
        ValueError: no names, a dataset is empty, or filtering left nothing.
        KeyError: a name is not registered (lists the registered names).
    """
    if isinstance(names, str):
        names = [names]  # detectron2 accepts one name (DATASETS.TRAIN as a string is refused at config level)
    names = list(names)
    if not names:
        raise ValueError("No dataset names given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    if proposal_files:
        raise NotImplementedError("Precomputed proposals (DATASETS.PROPOSAL_FILES_*) are not supported")
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if len(dicts) == 0:
            raise ValueError(f"Dataset '{name}' is empty!")
    dataset_dicts = list(itertools.chain.from_iterable(per_dataset))

    has_instances = "annotations" in dataset_dicts[0]
    if filter_empty and has_instances:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
    if min_keypoints > 0 and has_instances:
        dataset_dicts = filter_images_with_few_keypoints(dataset_dicts, min_keypoints)
    if not dataset_dicts:
        raise ValueError(
            f"No valid data found in {','.join(names)}: every image was filtered out "
            "(images without annotations are dropped when DATALOADER.FILTER_EMPTY_ANNOTATIONS is True)."
        )

    if has_instances:
        class_names = MetadataCatalog.get(names[0]).get("thing_classes")
        if class_names is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dataset_dicts, class_names)
    return dataset_dicts


def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    """Identity collate: a batch stays a list of dicts."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Give each DataLoader worker its own numpy/random/torch seed (derived from torch's)."""
    initial_seed = torch.initial_seed() % 2**31
    seed_all_rng(initial_seed + worker_id)


def build_batch_data_loader(
    dataset,
    sampler: Optional[torchdata.Sampler],
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Optional[Callable] = None,
    seed: Optional[int] = None,
    group_flags: Optional[np.ndarray] = None,
):
    """An infinite loader of per-rank batches (lists of ``total_batch_size // world_size`` dicts).

    The batches are a deterministic function of the sampler's stream (and, with ``seed``, of the
    augmentations), whatever ``num_workers``: see :class:`ToIterableDataset`. A resumed run
    continues the stream with :func:`set_train_loader_start`.

    Args:
        seed: per-element augmentation seed base (see :class:`ToIterableDataset`); None = the
            workers' own RNG streams (detectron2's behaviour).
        group_flags: ``(N,)`` bool, dataset index -> landscape (``w > h``); lets a resumed run
            rebuild the partial aspect-ratio buckets exactly.

    Raises:
        ValueError: ``total_batch_size`` is not a positive multiple of the world size
            (``SOLVER.IMS_PER_BATCH``).
    """
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"Total batch size (SOLVER.IMS_PER_BATCH = {total_batch_size}) must be a positive multiple "
            f"of the number of processes ({world_size})."
        )
    batch_size = total_batch_size // world_size

    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("A sampler cannot be used with an IterableDataset")
    else:
        dataset = ToIterableDataset(dataset, sampler, chunk_size=1 if aspect_ratio_grouping else batch_size, seed=seed)

    if aspect_ratio_grouping:
        loader = torchdata.DataLoader(
            dataset,
            num_workers=num_workers,
            collate_fn=operator.itemgetter(0),  # yield single dicts; grouping batches them
            worker_init_fn=worker_init_reset_seed,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        grouped.group_flags = group_flags
        if collate_fn is None:
            return grouped
        return MapDataset(grouped, collate_fn)
    loader = torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        worker_init_fn=worker_init_reset_seed,
    )
    return loader


def _find(obj: Any, cls: type, depth: int = 6) -> Optional[Any]:
    # Walk the wrappers built by build_batch_data_loader (DataLoader.dataset, MapDataset._dataset,
    # AspectRatioGroupedDataset.dataset) down to an object of type ``cls``.
    for _ in range(depth):
        if isinstance(obj, cls):
            return obj
        obj = getattr(obj, "dataset", None) if hasattr(obj, "dataset") else getattr(obj, "_dataset", None)
        if obj is None:
            return None
    return None


def set_train_loader_start(loader: Any, num_batches: int) -> bool:
    """Make a train loader of :func:`build_batch_data_loader` continue its stream after
    ``num_batches`` consumed batches (a resumed run), before it is iterated.

    Without aspect-ratio grouping the first ``num_batches * batch`` positions are skipped. With
    grouping, the bucket filling of the interrupted run is replayed on the index stream (no image
    is read) when the loader knows each index's orientation (``group_flags``): the positions left
    in the partial buckets are emitted first, so every later batch equals the uninterrupted run's.

    Returns:
        True when the continuation is exact; False when it is approximate (grouping without
        ``group_flags``: the partial buckets are dropped) or the loader is not one of ours.
    """
    stream = _find(loader, ToIterableDataset)
    if stream is None or num_batches <= 0:
        return stream is not None
    grouped = _find(loader, AspectRatioGroupedDataset)
    if grouped is None:
        batch = getattr(_find(loader, torchdata.DataLoader), "batch_size", None) or stream.chunk_size
        stream.set_start(num_batches * batch)
        return True
    flags = getattr(grouped, "group_flags", None)
    bs = grouped.batch_size
    if flags is None:
        stream.set_start(num_batches * bs)
        return False
    buckets: List[List[int]] = [[], []]
    emitted = 0
    position = 0
    for position, idx in enumerate(iter(stream.sampler)):
        bucket = buckets[0 if flags[idx] else 1]
        bucket.append(position)
        if len(bucket) == bs:
            del bucket[:]
            emitted += 1
            if emitted == num_batches:
                break
    stream.set_start(position + 1, replay=sorted(buckets[0] + buckets[1]))
    return True


def _check_unsupported_tasks(cfg) -> None:
    for key in ("KEYPOINT_ON", "MASK_ON", "LOAD_PROPOSALS"):
        if cfg.MODEL.get(key, False):
            raise NotImplementedError(
                f"MODEL.{key} True is not supported: the projects here are box detectors (no keypoint, "
                "mask or precomputed-proposal heads). Set it to False."
            )


def _train_loader_from_config(cfg, mapper=None, *, dataset=None, sampler=None) -> Dict[str, Any]:
    _check_unsupported_tasks(cfg)
    if isinstance(cfg.DATASETS.TRAIN, str):
        raise TypeError(
            f"DATASETS.TRAIN must be a tuple of names, got the string {cfg.DATASETS.TRAIN!r}: write "
            f"DATASETS.TRAIN = ('{cfg.DATASETS.TRAIN}',) (note the trailing comma)."
        )
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=None,
        )
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
    if sampler is None:
        sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
        logger.info("Using training sampler %s", sampler_name)
        if sampler_name == "TrainingSampler":
            sampler = TrainingSampler(len(dataset))
        elif sampler_name == "RepeatFactorTrainingSampler":
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dataset, cfg.DATALOADER.REPEAT_THRESHOLD
            )
            sampler = RepeatFactorTrainingSampler(factors)
        else:
            raise ValueError(
                f"Unknown training sampler: DATALOADER.SAMPLER_TRAIN = {sampler_name!r} "
                "(expected 'TrainingSampler' or 'RepeatFactorTrainingSampler')"
            )
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": cfg.SEED * 1000 + comm.get_rank() if cfg.SEED >= 0 else None,
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset,
    *,
    mapper: Optional[Callable],
    sampler: Optional[torchdata.Sampler] = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Optional[Callable] = None,
    seed: Optional[int] = None,
):
    """Infinite training loader; each item is a list of ``total_batch_size // world_size`` mapped dicts.

    Call as ``build_detection_train_loader(cfg)`` (``DATASETS.TRAIN``, ``DatasetMapper(cfg, True)``,
    ``DATALOADER.*``, ``SOLVER.IMS_PER_BATCH``), ``build_detection_train_loader(cfg, mapper=...)``,
    or with explicit arguments.

    Args:
        dataset: list of dataset dicts or a torch Dataset (map-style or iterable).
        mapper: callable dict -> model input dict (None: use ``dataset`` items as they are).
        sampler: index sampler (default :class:`TrainingSampler`); must be None for iterable datasets.
        total_batch_size: images per iteration over all processes.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        num_workers: DataLoader worker processes.
        collate_fn: batch collation (default: keep a list of dicts).
        seed: per-element augmentation seed (``SEED * 1000 + rank`` when ``SEED >= 0``), making
            the mapped stream independent of ``num_workers`` and resumable exactly.
    """
    group_flags = None
    if isinstance(dataset, list):
        if dataset and all("width" in d and "height" in d for d in dataset):
            group_flags = np.asarray([d["width"] > d["height"] for d in dataset], dtype=bool)
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("sampler must be None when the dataset is an IterableDataset")
    else:
        if sampler is None:
            sampler = TrainingSampler(len(dataset))
        if not isinstance(sampler, torchdata.Sampler):
            raise TypeError(f"Expect a torch Sampler, got {type(sampler)}")
    return build_batch_data_loader(
        dataset,
        sampler,
        total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        seed=seed,
        group_flags=group_flags,
    )


def _test_loader_from_config(cfg, dataset_name, mapper=None) -> Dict[str, Any]:
    if isinstance(dataset_name, str):
        dataset_name = [dataset_name]
    dataset = get_detection_dataset_dicts(
        dataset_name,
        filter_empty=False,
        proposal_files=None,
    )
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    return {"dataset": dataset, "mapper": mapper, "num_workers": cfg.DATALOADER.NUM_WORKERS}


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(
    dataset,
    *,
    mapper: Optional[Callable],
    sampler: Optional[torchdata.Sampler] = None,
    batch_size: int = 1,
    num_workers: int = 0,
    collate_fn: Optional[Callable] = None,
) -> torchdata.DataLoader:
    """Finite loader that yields every image once, in order (sharded across ranks).

    Call as ``build_detection_test_loader(cfg, "bccd_val")`` (``DatasetMapper(cfg, False)``) or
    with explicit arguments; batches are lists of ``batch_size`` mapped dicts.

    Args:
        dataset: list of dataset dicts or a torch Dataset.
        mapper: callable dict -> model input dict, or None.
        sampler: default :class:`InferenceSampler` (for map-style datasets).
        batch_size: images per batch (1 is what the evaluators assume by default).
        num_workers: DataLoader worker processes.
        collate_fn: default keeps a list of dicts.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        dataset = MapDataset(dataset, mapper)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("sampler must be None when the dataset is an IterableDataset")
    elif sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
    )
