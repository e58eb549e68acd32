"""Shared logic of every project's ``demo.py`` (detectron2 ``demo/demo.py`` + ``demo/predictor.py``).

A project's demo is three lines::

    from common.utils.demo import main
    from sparsercnn import add_sparsercnn_config
    main(config_adders=[add_sparsercnn_config])

Images are read in BGR order, which is what ``DefaultPredictor`` expects (it flips to RGB when
``INPUT.FORMAT == "RGB"``); the authors' demo read RGB and so fed RGB-trained models BGR pixels.
Class names come from ``predictor.metadata`` (stored in the checkpoint by the trainer).
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["get_parser", "setup_cfg", "expand_inputs", "run_on_image", "main"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser() -> argparse.ArgumentParser:
    """The detectron2 demo command line (image inputs only: no webcam/video in a headless OpenCV)."""
    parser = argparse.ArgumentParser(description="Run a detector on images and save visualisations")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--input", nargs="+", required=True,
        help="input images: paths or glob patterns such as 'directory/*.jpg'",
    )
    parser.add_argument(
        "--output", required=True,
        help="directory for the visualisations (file name kept), or an image file when there is one input",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=None,
        help="minimum score for instances to be shown (default: the model's test score threshold "
        "from the config when it has one, else 0.5 as detectron2's demo)",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER,
        help="modify config options using the command-line 'KEY VALUE' pairs",
    )
    return parser


def setup_cfg(args: argparse.Namespace, config_adders: Iterable[Callable[[Any], None]] = ()) -> Any:
    """get_cfg -> each adder -> merge_from_file -> merge_from_list(opts) -> thresholds -> freeze.

    The score-threshold keys detectron2's demo sets (ROI heads, RetinaNet, panoptic) are set to
    ``--confidence-threshold`` as well, so models that read them agree with the display filter.
    """
    from common.config import get_cfg

    cfg = get_cfg()
    for add_config in config_adders:
        add_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    from common.data import register_datasets_from_config
    from common.engine.defaults import _opts_keys, apply_checkpoint_metadata

    register_datasets_from_config(cfg)
    # Class count (and, in DefaultPredictor, class names) from the checkpoint's metadata.
    apply_checkpoint_metadata(cfg, cfg.MODEL.WEIGHTS, _opts_keys(args.opts))
    if args.confidence_threshold is None:
        args.confidence_threshold = model_score_threshold(cfg)
    thr = float(args.confidence_threshold)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = thr
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thr
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = thr
    cfg.freeze()
    return cfg


_THRESHOLD_SUFFIXES = ("SCORE_THRESH_TEST", "INFERENCE_TH_TEST", "TEST_SCORE_THRESH")


def model_score_threshold(cfg: Any, default: float = 0.5) -> float:
    """The configured model's own test score threshold: a key of its ``MODEL.<Project>`` node
    ending in ``SCORE_THRESH_TEST``/``INFERENCE_TH_TEST``/``TEST_SCORE_THRESH``, detectron2's
    ``ROI_HEADS``/``RETINANET.SCORE_THRESH_TEST`` for its own architectures, else ``default``
    (detectron2's demo default; NMS-free top-k models have no threshold of their own)."""
    from common.data import num_classes_key

    key = num_classes_key(cfg)
    if key is not None:
        node = cfg.MODEL[key.split(".")[1]]
        for k, v in node.items():
            if k.endswith(_THRESHOLD_SUFFIXES) and isinstance(v, (int, float)):
                return float(v)
    return float(default)


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """Expand paths/glob patterns into a sorted-per-pattern, de-duplicated list of files.

    Patterns that match nothing are logged; an error is raised only when nothing matches at all.

    Raises:
        FileNotFoundError: no pattern matched any file (names the patterns).
    """
    logger = logging.getLogger(__name__)
    files: List[str] = []
    seen = set()
    unmatched = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        if not matches:
            unmatched.append(pattern)
            logger.error(f"--input {pattern!r} matched no file")
        for path in matches:
            if path not in seen:
                seen.add(path)
                files.append(path)
    if not files:
        raise FileNotFoundError(f"--input matched no file: {unmatched}")
    return files


def _output_path(output: str, input_path: str, num_inputs: int) -> str:
    """``<output>/<basename>`` when ``output`` is (or will be) a directory, else ``output``."""
    is_file = not os.path.isdir(output) and output.lower().endswith(_IMAGE_EXTS)
    if is_file:
        if num_inputs != 1:
            raise ValueError(f"--output {output!r} is a file but there are {num_inputs} inputs; give a directory")
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.basename(input_path))


def run_on_image(predictor: Any, image_bgr: np.ndarray, metadata: Any, confidence_threshold: float):
    """Predict on one image and draw the instances scoring ``>= confidence_threshold``.

    Args:
        predictor: a callable (``DefaultPredictor``) taking a BGR ``(H, W, 3)`` uint8 image and
            returning ``{"instances": Instances}`` in that image's pixel coordinates.
        metadata: gives ``thing_classes`` for the labels.

    Returns:
        ``(predictions, instances_kept, VisImage)``.
    """
    from .visualizer import Visualizer

    predictions = predictor(image_bgr)
    instances = predictions["instances"].to("cpu")
    instances = instances[instances.scores >= confidence_threshold]
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata)  # the visualizer takes RGB
    return predictions, instances, visualizer.draw_instance_predictions(instances)


def _predictor_metadata(predictor: Any, cfg: Any) -> Any:
    metadata = getattr(predictor, "metadata", None)
    if metadata is None and len(cfg.DATASETS.TEST):
        from common.data import MetadataCatalog

        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    return metadata


def main(argv: Optional[Sequence[str]] = None, config_adders: Iterable[Callable[[Any], None]] = ()) -> List[str]:
    """Run the demo.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
        config_adders: functions adding a project's config keys (e.g. ``add_sparsercnn_config``).

    Returns:
        the paths of the visualisations written.

    Raises:
        FileNotFoundError: no ``--input`` matched a file. Unreadable images are logged and skipped.
    """
    from common.data.detection_utils import read_image
    from common.engine import DefaultPredictor

    from .logger import setup_logger

    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger()
    logger = logging.getLogger(__name__)
    logger.info("Arguments: " + str(args))

    cfg = setup_cfg(args, config_adders)
    inputs = expand_inputs(args.input)
    _output_path(args.output, inputs[0], len(inputs))  # fail on a bad --output before loading the model
    predictor = DefaultPredictor(cfg)
    metadata = _predictor_metadata(predictor, cfg)
    names = metadata.get("thing_classes", None) if metadata is not None else None
    logger.info("Class names ({}): {}".format(
        getattr(metadata, "name", "?"), ", ".join(names) if names else "none (boxes labelled by class index)"
    ))

    written: List[str] = []
    for path in inputs:
        try:
            img = read_image(path, format="BGR")
        except OSError as e:  # missing/undecodable (read_image's ImageReadError): report, go on
            logger.error(f"{path}: cannot read image ({type(e).__name__}: {e}); skipped")
            continue
        start = time.time()
        predictions, instances, vis = run_on_image(predictor, img, metadata, args.confidence_threshold)
        logger.info("{}: detected {} instances in {:.2f}s".format(path, len(instances), time.time() - start))
        if len(instances) == 0:
            all_scores = predictions["instances"].scores if "instances" in predictions else None
            if all_scores is not None and len(all_scores):
                logger.info(
                    "{}: no detection scored >= {:.2f} (highest {:.3f}); a model early in training scores "
                    "low: lower --confidence-threshold to see its boxes.".format(
                        path, args.confidence_threshold, float(all_scores.max())
                    )
                )
        out_file = _output_path(args.output, path, len(inputs))
        vis.save(out_file)
        written.append(out_file)
    return written
