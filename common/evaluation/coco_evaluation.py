"""COCO-style box AP with the official ``pycocotools`` COCOeval or ``faster-coco-eval``.

Same class/function names, arguments, output files and metric keys as detectron2 v0.6
``detectron2/evaluation/coco_evaluation.py``; only the ``bbox`` task is supported. detectron2's
compiled "fast" COCOeval (``COCOeval_opt``) is replaced by the ``faster-coco-eval`` package
(a maintained wheel of the same C++ evaluate/accumulate core; ``pip install faster-coco-eval``),
used when it is installed, with pycocotools as the fallback (one warning line). The backend is
chosen by ``TEST.EVALUATOR_BACKEND`` / ``COCOEvaluator(backend=...)``: ``"auto"`` (default),
``"pycocotools"`` or ``"faster_coco_eval"``. Both give the same 12 summary numbers and per-class
AP up to floating-point rounding (below 1e-12 percent: pycocotools divides ``tp / (tp + fp + eps)``,
the C++ core ``tp / (tp + fp)``), checked on COCO ground truth by ``tests/test_evaluator_backend.py``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from fvcore.common.config import CfgNode
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate
from torchvision.ops import box_convert

from common.data.datasets.coco import drop_invalid_gt_boxes
from common.utils import comm
from common.utils.logger import create_small_table

from .evaluator import DatasetEvaluator

__all__ = [
    "COCOEvaluator",
    "instances_to_coco_json",
    "InvalidCategoryError",
    "EVALUATOR_BACKENDS",
    "resolve_evaluator_backend",
]

#: Values of ``TEST.EVALUATOR_BACKEND`` / ``COCOEvaluator(backend=...)``.
EVALUATOR_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
_fallback_warned = False

_BBOX_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
_SUPPORTED_TASKS = ("bbox",)


class InvalidCategoryError(AssertionError, ValueError):
    """A prediction names a class the dataset does not have.

    Subclasses both ``AssertionError`` (what detectron2 raises, so its tests keep passing) and
    ``ValueError`` (so it is not stripped by ``python -O``-style expectations of asserts).
    """


def _faster_coco_eval_error() -> Optional[str]:
    """``None`` when ``faster_coco_eval`` (and its compiled core) imports, else the error text."""
    try:
        import faster_coco_eval  # noqa: F401
        from faster_coco_eval import COCO as _COCO, COCOeval_faster  # noqa: F401
    except Exception as e:  # ImportError, or a wheel whose extension does not load
        return f"{type(e).__name__}: {e}"
    return None


def resolve_evaluator_backend(backend: str = "auto", warn: bool = True) -> str:
    """The COCOeval implementation a ``backend`` setting means here.

    Args:
        backend: ``"auto"`` (``faster_coco_eval`` when it imports, else ``pycocotools``),
            ``"pycocotools"`` or ``"faster_coco_eval"`` (``TEST.EVALUATOR_BACKEND``).
        warn: log one warning per process when ``"auto"`` falls back to pycocotools.

    Returns:
        ``"pycocotools"`` or ``"faster_coco_eval"``.

    Raises:
        ValueError: unknown backend name.
        ImportError: ``"faster_coco_eval"`` requested but the package does not import.
    """
    global _fallback_warned
    name = str(backend).lower().replace("-", "_")
    if name not in EVALUATOR_BACKENDS:
        raise ValueError(f"TEST.EVALUATOR_BACKEND must be one of {list(EVALUATOR_BACKENDS)}, got {backend!r}")
    if name == "pycocotools":
        return name
    error = _faster_coco_eval_error()
    if name == "faster_coco_eval":
        if error is not None:
            raise ImportError(
                f"TEST.EVALUATOR_BACKEND 'faster_coco_eval' needs the faster-coco-eval package "
                f"(pip install faster-coco-eval): {error}"
            )
        return name
    if error is None:
        return "faster_coco_eval"
    if warn and not _fallback_warned:
        _fallback_warned = True
        logging.getLogger(__name__).warning(
            f"faster-coco-eval is not available ({error}); falling back to the slower official "
            "pycocotools COCOeval (pip install faster-coco-eval, or set TEST.EVALUATOR_BACKEND pycocotools)."
        )
    return "pycocotools"


def instances_to_coco_json(instances: Any, img_id: int) -> List[Dict[str, Any]]:
    """Convert one image's predicted ``Instances`` to COCO result records.

    Args:
        instances: ``Instances`` with ``pred_boxes`` (``Boxes`` or tensor, ``(N, 4)`` XYXY_ABS
            pixels of the original image), ``scores`` ``(N,)`` and ``pred_classes`` ``(N,)``
            (contiguous ids in ``[0, num_classes)``).
        img_id: the COCO image id.

    Returns:
        ``N`` dicts ``{"image_id", "category_id" (still contiguous), "bbox" ([x, y, w, h]
        XYWH_ABS), "score"}``. Source: detectron2 ``coco_evaluation.instances_to_coco_json``.
    """
    if len(instances) == 0:
        return []
    boxes = instances.pred_boxes
    boxes = boxes.tensor if hasattr(boxes, "tensor") else torch.as_tensor(boxes)
    boxes = box_convert(boxes.detach().float().cpu(), in_fmt="xyxy", out_fmt="xywh").tolist()
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    return [
        {"image_id": img_id, "category_id": int(c), "bbox": b, "score": float(s)}
        for b, s, c in zip(boxes, scores, classes)
    ]


class COCOEvaluator(DatasetEvaluator):
    """Evaluate box AP (AP, AP50, AP75, APs, APm, APl and per-category AP) with COCOeval
    (``faster-coco-eval`` when installed, else pycocotools; see the module docstring).

    Predictions are gathered to the main process, written to
    ``<output_dir>/instances_predictions.pth`` (``torch.save``) and
    ``<output_dir>/coco_instances_results.json`` (COCO result format with the dataset's own
    category ids), then evaluated. Source: detectron2 v0.6 ``COCOEvaluator``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
        use_fast_impl: bool = True,
        kpt_oks_sigmas: Sequence[float] = (),
        backend: Optional[str] = None,
    ) -> None:
        """
        Args:
            dataset_name: a name registered in ``MetadataCatalog``. Its metadata's ``json_file``
                is the ground truth; without one, the registered dataset dicts are converted to
                ``<output_dir>/<dataset_name>_coco_format.json``.
            tasks: tasks to evaluate; only ``("bbox",)`` is supported and ``None`` means it
                (detectron2 infers bbox/segm/keypoints from the predictions). A ``CfgNode`` here (the deprecated detectron2 form
                ``COCOEvaluator(name, cfg, True, out)``) is accepted and means ``None``.
            distributed: gather predictions from all ranks and evaluate on the main one.
            output_dir: where the results files are written (nothing written when ``None``).
            max_dets_per_image: COCOeval's largest ``maxDets`` (default 100); the summary
                metrics use it, so AP counts at most this many detections per image and class.
            use_fast_impl: detectron2's switch: ``True`` (default) means ``backend="auto"``,
                ``False`` the official pycocotools; ignored when ``backend`` is given.
            kpt_oks_sigmas: accepted for compatibility (keypoints are not evaluated).
            backend: ``"auto"``, ``"pycocotools"`` or ``"faster_coco_eval"``
                (``TEST.EVALUATOR_BACKEND``; see :func:`resolve_evaluator_backend`).

        Raises:
            ValueError: unsupported task or backend; dataset without ``json_file`` and no
                ``output_dir``.
            ImportError: ``backend="faster_coco_eval"`` without the package.
            KeyError: ``dataset_name`` is not registered (raised by ``MetadataCatalog``/
                ``DatasetCatalog`` when converting).
        """
        from common.data import MetadataCatalog

        self._logger = logging.getLogger(__name__)
        self._distributed = distributed
        self._output_dir = output_dir
        self._dataset_name = dataset_name

        self._max_dets_per_image = _max_dets_list(max_dets_per_image)

        if isinstance(tasks, CfgNode):
            kpt_oks_sigmas = kpt_oks_sigmas or tuple(tasks.TEST.KEYPOINT_OKS_SIGMAS)
            if backend is None:
                backend = tasks.TEST.get("EVALUATOR_BACKEND", None)
            self._logger.warning(
                "COCO Evaluator instantiated using config, this is deprecated behavior."
                " Please pass in explicit arguments instead."
            )
            tasks = None
        if tasks is not None:
            unsupported = sorted(set(tasks) - set(_SUPPORTED_TASKS))
            if unsupported:
                raise ValueError(
                    f"COCOEvaluator({dataset_name!r}): tasks {unsupported} are not supported; "
                    f"supported: {list(_SUPPORTED_TASKS)}"
                )
            tasks = tuple(tasks)
        self._tasks = tasks
        if backend is None:
            backend = "auto" if use_fast_impl else "pycocotools"
        self._backend = resolve_evaluator_backend(backend)
        self._use_fast_impl = self._backend == "faster_coco_eval"
        self._fast_coco_api = None
        self._kpt_oks_sigmas = np.asarray(kpt_oks_sigmas)
        self._cpu_device = torch.device("cpu")

        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(self._metadata, "json_file", None)
        if json_file is None:
            json_file = self._convert_to_coco_json(dataset_name, output_dir)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"COCOEvaluator({dataset_name!r}): ground-truth json {json_file!r} does not exist"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints loading chatter
            self._coco_api = COCO(json_file)
        drop_invalid_gt_boxes(self._coco_api, json_file)  # the boxes training drops too
        # Datasets without annotations (e.g. test-dev) can only be dumped, not evaluated.
        self._do_evaluation = "annotations" in self._coco_api.dataset
        self.reset()

    def _convert_to_coco_json(self, dataset_name: str, output_dir: Optional[str]) -> str:
        if output_dir is None:
            raise ValueError(
                f"COCOEvaluator({dataset_name!r}): output_dir must be provided for datasets not in "
                "COCO format (metadata has no json_file), to hold the converted ground truth."
            )
        from common.data.datasets.coco import convert_to_coco_json

        cache_path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
        self._logger.info(
            f"'{dataset_name}' is not registered with a COCO json; converting it to {cache_path}"
        )
        convert_to_coco_json(dataset_name, cache_path)
        self._metadata.json_file = cache_path
        return cache_path

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """
        Args:
            inputs: dataset dicts, each with ``"image_id"``.
            outputs: model outputs, each with ``"instances"`` (see ``instances_to_coco_json``).
        """
        for inp, out in zip(inputs, outputs):
            if "image_id" not in inp:
                raise KeyError(
                    f"COCOEvaluator: an input has no 'image_id' (keys: {sorted(inp)}); "
                    f"file {inp.get('file_name', '?')}"
                )
            if "instances" not in out:
                continue
            instances = out["instances"].to(self._cpu_device)
            self._predictions.append(
                {"image_id": inp["image_id"], "instances": instances_to_coco_json(instances, inp["image_id"])}
            )

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> Dict[str, Dict[str, float]]:
        """Gather, save and evaluate the predictions.

        Args:
            img_ids: restrict COCOeval to these image ids (default: all GT images).

        Returns:
            ``OrderedDict({"bbox": {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": ..,
            "APl": .., "AP-<class name>": ..}})``, values in percent, NaN where undefined;
            ``{}`` on non-main ranks, when nothing was processed, or without GT annotations.

        Raises:
            InvalidCategoryError: a predicted class id is outside ``[0, num_classes)``.
            ValueError: a prediction names an image id absent from the ground truth.
        """
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = list(itertools.chain(*gathered))
        else:
            predictions = self._predictions

        if len(predictions) == 0:
            self._logger.warning("[COCOEvaluator] Did not receive valid predictions.")
            return {}

        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "instances_predictions.pth"), "wb") as f:
                torch.save(predictions, f)

        self._results: Dict[str, Dict[str, float]] = OrderedDict()
        self._eval_predictions(predictions, img_ids=img_ids)
        return copy.deepcopy(self._results)

    def _eval_predictions(self, predictions: List[Dict[str, Any]], img_ids: Optional[Sequence[int]]) -> None:
        self._logger.info("Preparing results for COCO format ...")
        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        tasks = self._tasks or ("bbox",)
        self._map_category_ids(coco_results)
        self._check_image_ids(coco_results)

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with open(file_path, "w") as f:
                json.dump(coco_results, f)

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info(
            "Evaluating predictions with {} COCO API...".format(
                "faster-coco-eval" if self._use_fast_impl else "official"
            )
        )
        for task in sorted(tasks):
            # pycocotools cannot load an empty result list.
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._gt_api(), coco_results, task, img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image, backend=self._backend,
                )
                if len(coco_results) > 0
                else None
            )
            self._results[task] = self._derive_coco_results(coco_eval, task, class_names=self._class_names())

    @property
    def backend(self) -> str:
        """The COCOeval implementation in use: ``"pycocotools"`` or ``"faster_coco_eval"``."""
        return self._backend

    def _gt_api(self) -> Any:
        """The ground truth as a COCO object of the backend's own ``COCO`` class (cached)."""
        if self._backend == "pycocotools":
            return self._coco_api
        if self._fast_coco_api is None:
            from faster_coco_eval import COCO as FasterCOCO

            with contextlib.redirect_stdout(io.StringIO()):
                self._fast_coco_api = FasterCOCO(copy.deepcopy(self._coco_api.dataset))
        return self._fast_coco_api

    def _class_names(self) -> List[str]:
        """``thing_classes`` of the metadata; the json's category names (sorted by id) when the
        dataset was never loaded (metadata is filled by ``load_coco_json``)."""
        names = getattr(self._metadata, "thing_classes", None)
        if names is None:
            cats = self._coco_api.loadCats(sorted(self._coco_api.getCatIds()))
            names = [c["name"] for c in cats]
        return list(names)

    def _contiguous_to_dataset_ids(self) -> np.ndarray:
        """``lut[c]`` = the dataset category id of contiguous class ``c``."""
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            # load_coco_json maps sorted dataset ids to 0..K-1 (the same rule when it has not run
            # yet); converted datasets have ids 0..K-1 already, so this is the identity for them.
            return np.asarray(sorted(self._coco_api.getCatIds()), dtype=np.int64)
        contiguous = sorted(mapping.values())
        if contiguous != list(range(len(contiguous))):
            raise ValueError(
                f"MetadataCatalog[{self._dataset_name!r}].thing_dataset_id_to_contiguous_id must map "
                f"onto 0..{len(contiguous) - 1}, got values {contiguous}"
            )
        lut = np.empty(len(contiguous), dtype=np.int64)
        lut[list(mapping.values())] = list(mapping.keys())
        return lut

    def _map_category_ids(self, coco_results: List[Dict[str, Any]]) -> None:
        """Replace contiguous class ids by dataset category ids, in place."""
        if not coco_results:
            return
        lut = self._contiguous_to_dataset_ids()
        num_classes = len(lut)
        classes = np.fromiter((r["category_id"] for r in coco_results), dtype=np.int64, count=len(coco_results))
        bad = (classes < 0) | (classes >= num_classes)
        if bad.any():
            first = coco_results[int(np.flatnonzero(bad)[0])]
            raise InvalidCategoryError(
                f"A prediction has class={first['category_id']} (image_id {first['image_id']}), but the "
                f"dataset {self._dataset_name!r} only has {num_classes} classes and predicted class id "
                f"should be in [0, {num_classes - 1}]."
            )
        for result, dataset_id in zip(coco_results, lut[classes].tolist()):
            result["category_id"] = dataset_id

    def _check_image_ids(self, coco_results: List[Dict[str, Any]]) -> None:
        known = set(self._coco_api.getImgIds())
        unknown = {r["image_id"] for r in coco_results} - known
        if unknown:
            raise ValueError(
                f"Predictions for image ids {sorted(unknown)[:10]} which are not in the ground truth "
                f"of {self._dataset_name!r} ({getattr(self._metadata, 'json_file', '?')})"
            )

    def _derive_coco_results(
        self, coco_eval: Optional[Any], iou_type: str, class_names: Optional[Sequence[str]] = None
    ) -> Dict[str, float]:
        """Summary metrics in percent (NaN where COCOeval reports -1) plus ``AP-<class>``."""
        metrics = {"bbox": _BBOX_METRICS}[iou_type]
        if coco_eval is None:
            self._logger.warning("No predictions from the model!")
            return {metric: float("nan") for metric in metrics}

        stats = np.asarray(coco_eval.stats[: len(metrics)], dtype=np.float64)
        results = {m: float(s * 100) if s >= 0 else float("nan") for m, s in zip(metrics, stats)}
        self._logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(results))
        if not np.isfinite(sum(results.values())):
            self._logger.info("Some metrics cannot be computed and is shown as NaN.")
        if class_names is None or len(class_names) <= 1:
            return results

        # precision: (iou thresholds, recall thresholds, categories, area ranges, max dets);
        # area "all" and the largest maxDets, categories ordered as params.catIds.
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        cat_pos = {cat_id: i for i, cat_id in enumerate(coco_eval.params.catIds)}
        lut = self._contiguous_to_dataset_ids()
        if len(class_names) != len(lut):
            raise ValueError(
                f"MetadataCatalog[{self._dataset_name!r}] has {len(class_names)} thing_classes but "
                f"{len(lut)} categories"
            )
        per_category = []
        for name, dataset_id in zip(class_names, lut.tolist()):
            p = precision[:, :, cat_pos[dataset_id]]
            p = p[p > -1]
            per_category.append((str(name), float(np.mean(p) * 100) if p.size else float("nan")))

        n_cols = min(6, len(per_category) * 2)
        flat = list(itertools.chain(*per_category))
        rows = itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])
        table = tabulate(
            rows, tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (n_cols // 2), numalign="left"
        )
        self._logger.info(f"Per-category {iou_type} AP: \n" + table)
        results.update({"AP-" + name: ap for name, ap in per_category})
        return results


class _MaxDetsSummary:
    """Mixin for a COCOeval class: a summary that uses ``params.maxDets[2]`` everywhere.

    pycocotools' ``summarize`` hard-codes 100 detections for the first AP number, so it reports
    -1 when ``maxDets[2] != 100``. Same role as detectron2's ``COCOevalMaxDets``. Works on the
    ``eval``/``params`` of pycocotools' and faster-coco-eval's COCOeval alike (same layout).
    """

    def summarize(self) -> None:
        if not self.eval:
            raise RuntimeError("COCOeval.summarize() called before accumulate()")
        p = self.params
        max_det = p.maxDets[2]

        def mean_valid(arr: np.ndarray) -> float:
            valid = arr[arr > -1]
            return float(np.mean(valid)) if valid.size else -1.0

        def area(label: str) -> int:
            return p.areaRngLbl.index(label)

        def iou(thr: float) -> int:
            return int(np.flatnonzero(np.isclose(p.iouThrs, thr))[0])

        prec, rec = self.eval["precision"], self.eval["recall"]  # (T,R,K,A,M), (T,K,A,M)
        m = p.maxDets.index(max_det)
        self.stats = np.array(
            [
                mean_valid(prec[:, :, :, area("all"), m]),
                mean_valid(prec[iou(0.5), :, :, area("all"), m]),
                mean_valid(prec[iou(0.75), :, :, area("all"), m]),
                mean_valid(prec[:, :, :, area("small"), m]),
                mean_valid(prec[:, :, :, area("medium"), m]),
                mean_valid(prec[:, :, :, area("large"), m]),
                mean_valid(rec[:, :, area("all"), 0]),
                mean_valid(rec[:, :, area("all"), 1]),
                mean_valid(rec[:, :, area("all"), m]),
                mean_valid(rec[:, :, area("small"), m]),
                mean_valid(rec[:, :, area("medium"), m]),
                mean_valid(rec[:, :, area("large"), m]),
            ]
        )
        names = ["AP", "AP50", "AP75", "APs", "APm", "APl",
                 f"AR{p.maxDets[0]}", f"AR{p.maxDets[1]}", f"AR{max_det}", "ARs", "ARm", "ARl"]
        print("  ".join(f"{n}={v:.3f}" for n, v in zip(names, self.stats)))


class _COCOevalMaxDets(_MaxDetsSummary, COCOeval):
    """pycocotools COCOeval with :class:`_MaxDetsSummary`."""


def _cocoeval_class(backend: str, max_det: int) -> type:
    """The COCOeval class of ``backend`` (with the maxDets summary when ``max_det != 100``)."""
    if backend == "pycocotools":
        return COCOeval if max_det == 100 else _COCOevalMaxDets
    from faster_coco_eval import COCOeval_faster

    if max_det == 100:
        return COCOeval_faster
    return type("_FasterCOCOevalMaxDets", (_MaxDetsSummary, COCOeval_faster), {})


def _max_dets_list(max_dets_per_image: Optional[int]) -> List[int]:
    """COCOeval ``maxDets``: ``[1, 10, N]`` (``N`` = 100 by default).

    COCOeval sorts ``maxDets`` and evaluates with the last entry, so for ``N < 10`` the list is
    ``[1, N, N]`` (detectron2's ``[1, 10, N]`` would silently evaluate with 10 detections).

    Raises:
        ValueError: ``N < 1``.
    """
    if max_dets_per_image is None:
        return [1, 10, 100]
    n = int(max_dets_per_image)
    if n < 1:
        raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
    return [1, 10, n] if n >= 10 else [1, n, n]


def _evaluate_predictions_on_coco(
    coco_gt: Any,
    coco_results: List[Dict[str, Any]],
    iou_type: str,
    img_ids: Optional[Sequence[int]] = None,
    max_dets_per_image: Optional[List[int]] = None,
    backend: str = "pycocotools",
) -> Any:
    """Run COCOeval evaluate/accumulate/summarize on non-empty ``coco_results``.

    Args:
        coco_gt: ground truth, a ``COCO`` of the backend's package (a pycocotools ``COCO`` is
            converted for ``faster_coco_eval``).
        coco_results: COCO result dicts (``bbox`` XYWH_ABS, dataset category ids).
        backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (already resolved).

    Returns:
        the COCOeval object (``stats`` (12,), ``eval["precision"]`` (T, R, K, A, M)).
    """
    if len(coco_results) == 0:
        raise ValueError("_evaluate_predictions_on_coco needs at least one prediction")
    if backend not in ("pycocotools", "faster_coco_eval"):
        raise ValueError(f"_evaluate_predictions_on_coco: unresolved backend {backend!r}")
    max_dets = [1, 10, 100] if max_dets_per_image is None else sorted(max_dets_per_image)
    if len(max_dets) != 3:
        raise ValueError(f"max_dets_per_image must have 3 entries for COCOeval, got {max_dets}")
    eval_cls = _cocoeval_class(backend, max_dets[2])
    kwargs: Dict[str, Any] = {}
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO

        if not isinstance(coco_gt, FasterCOCO):
            with contextlib.redirect_stdout(io.StringIO()):
                coco_gt = FasterCOCO(copy.deepcopy(coco_gt.dataset))
        kwargs["print_function"] = logging.getLogger(__name__).info
    # loadRes adds area/id/iscrowd/segmentation keys to the dicts it gets; keep ours clean.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(coco_results))
    coco_eval = eval_cls(coco_gt, coco_dt, iou_type, **kwargs)
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    start = time.perf_counter()
    coco_eval.evaluate()
    coco_eval.accumulate()
    logging.getLogger(__name__).info(
        f"COCOeval ({backend}) evaluate() + accumulate() finished in {time.perf_counter() - start:.2f} seconds."
    )
    coco_eval.summarize()
    return coco_eval
