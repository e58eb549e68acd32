"""Metadata of the builtin datasets: COCO's 80 thing classes with their ids and colours.

The ids are COCO's (1..90 with gaps); the colours are the panopticapi visualisation colours
that detectron2 uses (``detectron2/data/datasets/builtin_meta.py``). Models predict the
contiguous index 0..79 (position in this list).
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

# (COCO category id, name, RGB colour)
_COCO_THINGS: List[Tuple[int, str, Tuple[int, int, int]]] = [
    (1, "person", (220, 20, 60)), (2, "bicycle", (119, 11, 32)), (3, "car", (0, 0, 142)),
    (4, "motorcycle", (0, 0, 230)), (5, "airplane", (106, 0, 228)), (6, "bus", (0, 60, 100)),
    (7, "train", (0, 80, 100)), (8, "truck", (0, 0, 70)), (9, "boat", (0, 0, 192)),
    (10, "traffic light", (250, 170, 30)), (11, "fire hydrant", (100, 170, 30)),
    (13, "stop sign", (220, 220, 0)), (14, "parking meter", (175, 116, 175)),
    (15, "bench", (250, 0, 30)), (16, "bird", (165, 42, 42)), (17, "cat", (255, 77, 255)),
    (18, "dog", (0, 226, 252)), (19, "horse", (182, 182, 255)), (20, "sheep", (0, 82, 0)),
    (21, "cow", (120, 166, 157)), (22, "elephant", (110, 76, 0)), (23, "bear", (174, 57, 255)),
    (24, "zebra", (199, 100, 0)), (25, "giraffe", (72, 0, 118)), (27, "backpack", (255, 179, 240)),
    (28, "umbrella", (0, 125, 92)), (31, "handbag", (209, 0, 151)), (32, "tie", (188, 208, 182)),
    (33, "suitcase", (0, 220, 176)), (34, "frisbee", (255, 99, 164)), (35, "skis", (92, 0, 73)),
    (36, "snowboard", (133, 129, 255)), (37, "sports ball", (78, 180, 255)),
    (38, "kite", (0, 228, 0)), (39, "baseball bat", (174, 255, 243)),
    (40, "baseball glove", (45, 89, 255)), (41, "skateboard", (134, 134, 103)),
    (42, "surfboard", (145, 148, 174)), (43, "tennis racket", (255, 208, 186)),
    (44, "bottle", (197, 226, 255)), (46, "wine glass", (171, 134, 1)), (47, "cup", (109, 63, 54)),
    (48, "fork", (207, 138, 255)), (49, "knife", (151, 0, 95)), (50, "spoon", (9, 80, 61)),
    (51, "bowl", (84, 105, 51)), (52, "banana", (74, 65, 105)), (53, "apple", (166, 196, 102)),
    (54, "sandwich", (208, 195, 210)), (55, "orange", (255, 109, 65)),
    (56, "broccoli", (0, 143, 149)), (57, "carrot", (179, 0, 194)), (58, "hot dog", (209, 99, 106)),
    (59, "pizza", (5, 121, 0)), (60, "donut", (227, 255, 205)), (61, "cake", (147, 186, 208)),
    (62, "chair", (153, 69, 1)), (63, "couch", (3, 95, 161)), (64, "potted plant", (163, 255, 0)),
    (65, "bed", (119, 0, 170)), (67, "dining table", (0, 182, 199)), (70, "toilet", (0, 165, 120)),
    (72, "tv", (183, 130, 88)), (73, "laptop", (95, 32, 0)), (74, "mouse", (130, 114, 135)),
    (75, "remote", (110, 129, 133)), (76, "keyboard", (166, 74, 118)),
    (77, "cell phone", (219, 142, 185)), (78, "microwave", (79, 210, 114)),
    (79, "oven", (178, 90, 62)), (80, "toaster", (65, 70, 15)), (81, "sink", (127, 167, 115)),
    (82, "refrigerator", (59, 105, 106)), (84, "book", (142, 108, 45)), (85, "clock", (196, 172, 0)),
    (86, "vase", (95, 54, 80)), (87, "scissors", (128, 76, 255)), (88, "teddy bear", (201, 57, 1)),
    (89, "hair drier", (246, 0, 122)), (90, "toothbrush", (191, 162, 208)),
]

COCO_CATEGORIES: List[Dict[str, Any]] = [
    {"color": list(color), "isthing": 1, "id": cid, "name": name} for cid, name, color in _COCO_THINGS
]
"""COCO thing categories as dicts ``{"color", "isthing", "id", "name"}`` (detectron2's format)."""

BCCD_CLASSES: List[str] = ["RBC", "WBC", "Platelets"]
"""BCCD class names; their COCO category ids in ``datasets/bccd/*.json`` are 1, 2, 3."""


def _get_coco_instances_meta() -> Dict[str, Any]:
    thing_ids = [c["id"] for c in COCO_CATEGORIES]
    assert len(thing_ids) == 80, len(thing_ids)
    return {
        "thing_dataset_id_to_contiguous_id": {k: i for i, k in enumerate(thing_ids)},
        "thing_classes": [c["name"] for c in COCO_CATEGORIES],
        "thing_colors": [c["color"] for c in COCO_CATEGORIES],
    }


def _get_bccd_meta() -> Dict[str, Any]:
    return {
        "thing_classes": list(BCCD_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(BCCD_CLASSES))},
    }


def _get_builtin_metadata(dataset_name: str) -> Dict[str, Any]:
    """Metadata dict for a builtin dataset family ("coco" or "bccd")."""
    if dataset_name == "coco":
        return _get_coco_instances_meta()
    if dataset_name == "bccd":
        return _get_bccd_meta()
    raise KeyError(f"No built-in metadata for dataset {dataset_name!r} (known: 'coco', 'bccd')")
