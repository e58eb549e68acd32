"""Evaluation (detectron2 v0.6 ``detectron2/evaluation``): evaluator interface, inference loop,
COCO box AP through pycocotools, result printing/verification."""
from .coco_evaluation import COCOEvaluator, instances_to_coco_json
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .testing import flatten_results_dict, print_csv_format, verify_results

__all__ = [
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "flatten_results_dict",
    "inference_context",
    "inference_on_dataset",
    "instances_to_coco_json",
    "print_csv_format",
    "verify_results",
]
