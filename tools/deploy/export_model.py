#!/usr/bin/env python
"""Export a project's detector to ONNX or TorchScript (detectron2's ``tools/deploy/export_model.py``).

    python tools/deploy/export_model.py --config-file projects/OneNet/configs/onenet.bccd.res18.yaml \
        --format onnx --export-method tracing --output ./output/onenet_export \
        MODEL.WEIGHTS output/onenet_bccd/model_final.pth
    python tools/deploy/export_model.py --config-file <cfg> --format torchscript --output DIR --run-eval \
        MODEL.WEIGHTS <model.pth>

The exported graph takes the batch of normalised, padded images that the model builds itself
(plus ``images_whwh (B, 4)`` for Sparse R-CNN) and returns ``boxes (B, K, 4)`` XYXY_ABS pixels of
the network input, ``scores (B, K)`` and ``classes (B, K)`` int64, with the model's top-k
decoding inside and no NMS (see ``common.export.wrappers``). Shapes are those of the sample
(``--sample-image``, default the first image of ``DATASETS.TEST[0]``, resized as the test loader
does; ``--export-size H W`` pads it to a larger canvas so that every test image fits).
Writes ``DIR/model.onnx`` or ``DIR/model.ts``; the exported model is run on the sample and its
largest difference from PyTorch eager is printed. ``--run-eval`` evaluates the exported model on
``DATASETS.TEST[0]`` with ``COCOEvaluator`` (onnxruntime on CPU for ONNX).
``--export-method scripting`` is not supported (the models are exported by tracing).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.export.export import (  # noqa: E402
    OnnxRuntimeRunner,
    TorchScriptRunner,
    export_onnx,
    export_torchscript,
)
from common.export.project import project_trainer, setup_project_cfg  # noqa: E402
from common.export.wrappers import build_export_wrapper  # noqa: E402

logger = logging.getLogger("common.export")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a model for deployment.")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="output format")
    parser.add_argument("--export-method", choices=["tracing", "scripting"], default="tracing",
                        help="method to export models (only tracing is supported)")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--sample-image", default=None, type=str, help="sample image for input")
    parser.add_argument("--export-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="pad the sample to this network-input size (every --run-eval image must fit)")
    parser.add_argument("--run-eval", action="store_true", help="evaluate the exported model on DATASETS.TEST[0]")
    parser.add_argument("--output", help="output directory for the converted model")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def sample_inputs(cfg: Any, sample_image: Optional[str]) -> List[Dict[str, Any]]:
    """One input dict from ``sample_image`` (or the first image of ``DATASETS.TEST[0]``), mapped
    by the test ``DatasetMapper`` (``INPUT.FORMAT``, ``ResizeShortestEdge(MIN/MAX_SIZE_TEST)``).

    Raises:
        FileNotFoundError: the image does not exist. ValueError: no sample and no DATASETS.TEST.
    """
    from common.data import DatasetCatalog, DatasetMapper

    if sample_image is None:
        if not len(cfg.DATASETS.TEST):
            raise ValueError("--sample-image is required when DATASETS.TEST is empty")
        sample_image = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    if not os.path.isfile(sample_image):
        raise FileNotFoundError(f"--sample-image {sample_image!r} does not exist")
    return [DatasetMapper(cfg, is_train=False)({"file_name": sample_image, "image_id": 0})]


def run_eval(cfg: Any, config_file: str, wrapper, runner, export_shape, output_dir: str) -> Dict[str, Any]:
    """``COCOEvaluator`` on ``DATASETS.TEST[0]`` with the exported model (one image per call)."""
    from common.evaluation import COCOEvaluator, print_csv_format

    dataset = cfg.DATASETS.TEST[0]
    loader = project_trainer(config_file).build_test_loader(cfg, dataset)
    evaluator = COCOEvaluator(dataset, distributed=False, output_dir=output_dir,
                              backend=cfg.TEST.get("EVALUATOR_BACKEND", "auto"))
    evaluator.reset()
    for batch in loader:
        for inputs in batch:
            tensors, context = wrapper.preprocess([inputs])
            outputs = runner(*wrapper.fit_inputs(tensors, export_shape))
            evaluator.process([inputs], wrapper.postprocess(outputs, context, [inputs]))
    results = evaluator.evaluate()
    print_csv_format(results)
    return results


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    if args.export_method == "scripting":
        raise SystemExit("--export-method scripting is not supported: the detectors take Python structures "
                         "(Instances) inside; use --export-method tracing")
    if not args.output:
        raise SystemExit("--output DIR is required")
    from common.checkpoint import DetectionCheckpointer
    from common.modeling import build_model
    from common.utils.logger import setup_logger

    setup_logger(name="common")
    cfg = setup_project_cfg(args.config_file, list(args.opts or []) + ["MODEL.DEVICE", "cpu"], freeze=False)
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    wrapper = build_export_wrapper(model, cfg.MODEL.META_ARCHITECTURE)

    batched = sample_inputs(cfg, args.sample_image)
    inputs, context = wrapper.preprocess(batched)
    if args.export_size:
        shape = (inputs[0].shape[0], inputs[0].shape[1], *args.export_size)
        inputs = wrapper.fit_inputs(inputs, shape)
    os.makedirs(args.output, exist_ok=True)
    if args.format == "onnx":
        path = export_onnx(wrapper, inputs, os.path.join(args.output, "model.onnx"))
        runner = OnnxRuntimeRunner(path)
    else:
        path = export_torchscript(wrapper, inputs, os.path.join(args.output, "model.ts"))
        runner = TorchScriptRunner(path)

    with torch.no_grad():
        eager = wrapper(*inputs)
    exported = [torch.as_tensor(o) for o in runner(*inputs)]
    diffs = {name: float((e.double() - x.double()).abs().max()) for name, e, x in zip(wrapper.output_names, eager, exported)}
    logger.info(f"Exported {path}: inputs {[tuple(t.shape) for t in inputs]} ({', '.join(wrapper.input_names)}); "
                f"max |exported - eager| on the sample: {diffs}")
    print(f"exported {path}; max |exported - eager|: " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    ret: Dict[str, Any] = {"path": path, "max_abs_diff": diffs}
    if args.run_eval:
        ret["results"] = run_eval(cfg, args.config_file, wrapper, runner, tuple(inputs[0].shape), args.output)
    return ret


if __name__ == "__main__":
    main()
