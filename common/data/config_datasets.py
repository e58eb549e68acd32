"""Datasets and class counts declared in the config.

* ``DATASETS.COCO_JSON``: ``(name, json_file, image_root)`` triples registered as COCO-json
  datasets (``register_coco_instances``) in every process, from the config alone, so a user's
  dataset needs no code: ``train_net.py --config-file X DATASETS.COCO_JSON "(('mine', 'a.json',
  'imgs'),)" DATASETS.TRAIN "('mine',)"``.
* One class count per project: the project's own ``MODEL.<Project>.NUM_CLASSES`` node (found
  without a per-project table: the ``MODEL`` sub-node with ``NUM_CLASSES`` that detectron2's
  defaults do not have) is checked against ``thing_classes`` of ``DATASETS.TRAIN[0]``, or taken
  from it with ``MODEL.NUM_CLASSES_FROM_DATASET True``. Setting detectron2's
  ``MODEL.ROI_HEADS.NUM_CLASSES`` / ``MODEL.RETINANET.NUM_CLASSES`` for a project that does not
  read them is an error instead of being silently ignored.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, List, Optional, Sequence

from .catalog import DatasetCatalog, MetadataCatalog
from .datasets.coco import register_coco_instances

__all__ = [
    "dataset_thing_classes",
    "num_classes_key",
    "register_datasets_from_config",
    "resolve_num_classes",
]

logger = logging.getLogger(__name__)

# detectron2's own class-count keys (read by GeneralizedRCNN / RetinaNet only).
_D2_NUM_CLASSES_KEYS = ("ROI_HEADS", "RETINANET")


def register_datasets_from_config(cfg: Any) -> List[str]:
    """Register every ``DATASETS.COCO_JSON`` entry (idempotent: an entry registered earlier with
    the same files is kept).

    Returns:
        the names registered or confirmed.

    Raises:
        ValueError: an entry is not a (name, json_file, image_root) triple of strings, or its name
            is already registered with other files.
        FileNotFoundError: the json file or the image root does not exist.
    """
    entries = cfg.DATASETS.get("COCO_JSON", ())
    if isinstance(entries, str) or (len(entries) == 3 and all(isinstance(e, str) for e in entries)):
        raise ValueError(
            "DATASETS.COCO_JSON must be a tuple of (name, json_file, image_root) triples, got {!r}; "
            "write DATASETS.COCO_JSON \"(('name', 'file.json', 'images/'),)\" (note the trailing comma).".format(entries)
        )
    names: List[str] = []
    for entry in entries:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(e, str) for e in entry)):
            raise ValueError(
                "DATASETS.COCO_JSON entry {!r} is not a (name, json_file, image_root) triple of strings".format(entry)
            )
        name, json_file, image_root = entry
        if not os.path.isfile(json_file):
            raise FileNotFoundError("DATASETS.COCO_JSON entry {!r}: json file {} not found".format(name, json_file))
        if not os.path.isdir(image_root):
            raise FileNotFoundError("DATASETS.COCO_JSON entry {!r}: image root {} not found".format(name, image_root))
        if name in DatasetCatalog:
            meta = MetadataCatalog.get(name)
            same = os.path.abspath(meta.get("json_file", "")) == os.path.abspath(json_file) and os.path.abspath(
                meta.get("image_root", "")
            ) == os.path.abspath(image_root)
            if not same:
                raise ValueError(
                    "DATASETS.COCO_JSON entry {!r}: a dataset of that name is already registered with "
                    "json_file={} image_root={}; choose another name.".format(
                        name, meta.get("json_file", "?"), meta.get("image_root", "?")
                    )
                )
        else:
            register_coco_instances(name, {}, json_file, image_root)
            logger.info("Registered COCO-json dataset %r from %s (images in %s)", name, json_file, image_root)
        names.append(name)
    return names


def dataset_thing_classes(name: str) -> Optional[List[str]]:
    """Class names of a registered dataset: its metadata's ``thing_classes``, else the sorted-by-id
    category names of its COCO ``json_file`` (read without loading the annotations into dicts);
    None when neither is known."""
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes", None)
    if classes is not None:
        return list(classes)
    json_file = meta.get("json_file", None)
    if json_file and os.path.isfile(json_file):
        with open(json_file) as f:
            cats = json.load(f).get("categories", [])
        return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    return None


def num_classes_key(cfg: Any) -> Optional[str]:
    """The full key of the class count the configured model reads, e.g.
    ``"MODEL.SparseRCNN.NUM_CLASSES"``; None when the model has none.

    The project's node is the ``MODEL`` sub-node holding ``NUM_CLASSES`` that detectron2's
    defaults lack; when there are several, the one named like ``MODEL.META_ARCHITECTURE``
    (case-insensitive). Without a project node, detectron2's ``ROI_HEADS`` (GeneralizedRCNN) or
    ``RETINANET`` (RetinaNet) when that architecture is registered; None for other models.
    """
    project_nodes = [
        k for k, v in cfg.MODEL.items() if hasattr(v, "keys") and "NUM_CLASSES" in v and k not in _D2_NUM_CLASSES_KEYS
    ]
    arch = str(cfg.MODEL.META_ARCHITECTURE).lower()
    if len(project_nodes) > 1:
        exact = [k for k in project_nodes if k.lower() == arch]
        prefix = sorted((k for k in project_nodes if arch.startswith(k.lower())), key=len, reverse=True)
        project_nodes = exact or prefix or project_nodes[:1]
    if project_nodes:
        return "MODEL.{}.NUM_CLASSES".format(project_nodes[0])
    from common.modeling import META_ARCH_REGISTRY

    if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
        return None  # a model built by user code: its class count is not ours to check
    if arch == "retinanet":
        return "MODEL.RETINANET.NUM_CLASSES"
    if arch == "generalizedrcnn":
        return "MODEL.ROI_HEADS.NUM_CLASSES"
    return None


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: Any, key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def resolve_num_classes(cfg: Any, dataset_names: Optional[Sequence[str]] = None) -> Optional[str]:
    """Check (or, with ``MODEL.NUM_CLASSES_FROM_DATASET``, set) the model's class count against
    the first training dataset. ``cfg`` must not be frozen when it is to be set.

    Args:
        dataset_names: datasets whose ``thing_classes`` define the classes (default
            ``DATASETS.TRAIN``).

    Returns:
        the class-count key (see :func:`num_classes_key`).

    Raises:
        ValueError: detectron2's ``ROI_HEADS``/``RETINANET.NUM_CLASSES`` set although the model
            reads another key; or the count differs from the dataset's number of classes.
    """
    from common.config import get_cfg

    key = num_classes_key(cfg)
    if key is None:
        return None
    defaults = get_cfg()
    for node in _D2_NUM_CLASSES_KEYS:
        other = "MODEL.{}.NUM_CLASSES".format(node)
        if other != key and _get(cfg, other) != _get(defaults, other):
            raise ValueError(
                "{} = {} is not read by MODEL.META_ARCHITECTURE {}: its class count is {} (= {}). "
                "Set {} instead.".format(other, _get(cfg, other), cfg.MODEL.META_ARCHITECTURE, key, _get(cfg, key), key)
            )
    names = list(cfg.DATASETS.TRAIN if dataset_names is None else dataset_names)
    if not names:
        return key
    classes = dataset_thing_classes(names[0])
    if classes is None:
        return key
    current = int(_get(cfg, key))
    if current == len(classes):
        return key
    if cfg.MODEL.get("NUM_CLASSES_FROM_DATASET", False):
        logger.info("%s = %d taken from dataset %r (%s)", key, len(classes), names[0], ", ".join(classes[:10]))
        _set(cfg, key, len(classes))
        return key
    raise ValueError(
        "{} = {} but dataset {!r} has {} classes ({}). Set {} {} or MODEL.NUM_CLASSES_FROM_DATASET True.".format(
            key, current, names[0], len(classes), ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else ""),
            key, len(classes),
        )
    )
