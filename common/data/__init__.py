"""Data loading (``detectron2.data``): catalogues, COCO loading, augmentation, mappers, loaders.

Importing this package registers the builtin datasets (``bccd_*``, ``coco_2017_*``), so every
process that imports ``common.data`` (including those started by ``launch``) sees them.
"""
from . import transforms  # isort:skip
from . import datasets, samplers  # noqa: F401  (datasets: builtin registration)
from . import detection_utils
from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    print_instances_class_histogram,
    set_train_loader_start,
    trivial_batch_collator,
)
from .config_datasets import dataset_thing_classes, num_classes_key, register_datasets_from_config, resolve_num_classes
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .detr_dataset_mapper import DetrDatasetMapper

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetCatalog",
    "DatasetFromList",
    "DatasetMapper",
    "DetrDatasetMapper",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "ToIterableDataset",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "datasets",
    "detection_utils",
    "get_detection_dataset_dicts",
    "print_instances_class_histogram",
    "samplers",
    "set_train_loader_start",
    "register_datasets_from_config",
    "resolve_num_classes",
    "num_classes_key",
    "dataset_thing_classes",
    "transforms",
    "trivial_batch_collator",
]
