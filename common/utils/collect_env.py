"""Environment report for bug reports and logs (``python -m common.utils.collect_env``).

Same table form as detectron2's ``detectron2/utils/collect_env.py`` (one ``tabulate`` table of
``(name, value)`` rows followed by ``torch.__config__.show()``), with the rows that matter here:
Python, numpy, PyTorch, torchvision and whether its compiled ops load, CUDA / cuDNN, the GPUs,
fvcore, iopath, pycocotools, the COCO evaluator backend that ``TEST.EVALUATOR_BACKEND "auto"``
picks, faster-coco-eval, onnx / onnxruntime (``[export]`` extra), OpenCV, Pillow, matplotlib.

``common.utils.env.collect_env_info`` (logged by ``default_setup``) is this function.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections import defaultdict
from typing import List, Optional, Tuple

import numpy as np
import torch

__all__ = ["collect_env_info", "collect_env_rows", "torchvision_ops_status"]

Row = Tuple[str, str]


def _version(module_name: str, dist_name: Optional[str] = None) -> str:
    """``"<version> @<install dir>"``, or ``"not installed"`` / ``"failed to import: <error>"``.

    The version is the module's ``__version__``, else that of the distribution ``dist_name``
    (pycocotools has no ``__version__``).
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return "not installed"
    except Exception as e:  # a broken install must not break the report
        return f"failed to import: {type(e).__name__}: {e}"
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(dist_name or module_name)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown version"
    path = os.path.dirname(getattr(module, "__file__", "") or "")
    return f"{version} @{path}" if path else str(version)


def torchvision_ops_status() -> str:
    """Whether torchvision's compiled C++ ops (``nms``, ``roi_align``, ``deform_conv2d``) run on CPU.

    Each op is called once on a tiny tensor; a torchvision wheel built for another torch version
    fails here with "operator torchvision::nms does not exist".

    Returns:
        ``"yes"`` or ``"NO: <op>: <error>"`` (first failing op).
    """
    try:
        from torchvision.ops import deform_conv2d, nms, roi_align

        boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]])
        nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
        x = torch.zeros(1, 1, 3, 3)
        roi_align(x, [boxes[:1]], output_size=1, aligned=True)
        deform_conv2d(x, torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 1, 1))
    except Exception as e:
        return f"NO: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "yes"


def _evaluator_backend() -> str:
    try:
        from common.evaluation.coco_evaluation import resolve_evaluator_backend

        return resolve_evaluator_backend("auto", warn=False)
    except Exception as e:
        return f"unavailable: {type(e).__name__}: {e}"


def _gpu_rows() -> List[Row]:
    rows: List[Row] = []
    has_cuda = torch.cuda.is_available()
    rows.append(("GPU available", str(has_cuda)))
    if has_cuda:
        devices = defaultdict(list)
        for k in range(torch.cuda.device_count()):
            cap = ".".join(str(x) for x in torch.cuda.get_device_capability(k))
            devices[f"{torch.cuda.get_device_name(k)} (arch={cap})"].append(str(k))
        for name, ids in devices.items():
            rows.append(("GPU " + ",".join(ids), name))
        rows.append(("CUDA_HOME", str(os.environ.get("CUDA_HOME"))))
    rows.append(("CUDA (torch build)", str(torch.version.cuda)))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.append(("cuDNN", str(cudnn) if cudnn is not None else "not available"))
    return rows


def collect_env_rows() -> List[Row]:
    """The ``(name, value)`` rows of :func:`collect_env_info` (all values are strings)."""
    rows: List[Row] = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", "")),
        ("numpy", np.__version__),
        ("PyTorch", f"{torch.__version__} @{os.path.dirname(torch.__file__)}"),
        ("PyTorch debug build", str(torch.version.debug)),
    ]
    rows += _gpu_rows()
    rows += [
        ("torchvision", _version("torchvision")),
        ("torchvision compiled ops", torchvision_ops_status()),
        ("fvcore", _version("fvcore")),
        ("iopath", _version("iopath")),
        ("pycocotools", _version("pycocotools", "pycocotools")),
        ("faster-coco-eval", _version("faster_coco_eval", "faster-coco-eval")),
        ("COCO evaluator backend (auto)", _evaluator_backend()),
        ("onnx", _version("onnx")),
        ("onnxruntime", _version("onnxruntime")),
        ("cv2", _version("cv2")),
        ("Pillow", _version("PIL")),
        ("matplotlib", _version("matplotlib")),
    ]
    return rows


def collect_env_info() -> str:
    """The environment table (``tabulate`` default format, as detectron2) + ``torch.__config__.show()``."""
    from tabulate import tabulate

    text = tabulate(collect_env_rows())
    try:
        text += "\n" + torch.__config__.show()
    except Exception:  # pragma: no cover - older torch builds
        pass
    return text


def main() -> None:
    print(collect_env_info())


if __name__ == "__main__":
    main()
