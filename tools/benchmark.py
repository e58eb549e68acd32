#!/usr/bin/env python
"""Speed benchmark for any project config: parameters, training iterations/s, inference ms/image.

    python tools/benchmark.py --config-file projects/SparseRCNN/configs/sparsercnn.bccd.res18.yaml \
        --num-iter 5 --warmup 2 --device cpu
    python tools/benchmark.py --config-file projects/SparseRCNN/configs/sparsercnn.res50.100pro.3x.yaml \
        --device cuda --data train SOLVER.IMS_PER_BATCH 2
    python tools/benchmark.py --config-file <cfg> --device cpu --skip-train --format onnx  # eager vs onnxruntime
    python tools/benchmark.py --evaluator datasets/coco/annotations/instances_val2017.json  # COCOeval backends
    python tools/benchmark.py --config-file projects/FCOS_VFNet/configs/fcos.R_50_1x.yaml \
        --compare-config projects/AutoAssign/configs/autoassign.r50_fpn_1x.yaml --image-size 800 1333
    python tools/benchmark.py --config-file projects/FCOS_VFNet/configs/fcos.R_50_1x.yaml \
        --torchvision-reference fcos_resnet50_fpn  # + torchvision's FCOS on the same images
    python tools/benchmark.py --config-file projects/CornerNet/configs/cornernet_saccade.hg54.yaml \
        --compare-config projects/CornerNet/configs/cornernet.hg104.yaml --project CornerNet \
        --image-size 511 511 --skip-train  # saccade inference (+ crops per image) vs CornerNet-104

Project configs are found automatically: every ``projects/<Name>/<pkg>/config.py`` that defines an
``add_*_config`` function is imported as ``projects.<Name>.<pkg>`` (which also registers the
project's meta-architecture) and applied, unless ``--project`` names the ones to use. Training
batches are synthetic (``--data synthetic``: ``SOLVER.IMS_PER_BATCH`` random images of the test
size with a few random boxes each) or come from ``DATASETS.TRAIN`` through the default
``DatasetMapper`` (``--data train``). Inference is timed at batch size 1 on the test size, after
warm-up, with ``torch.cuda.synchronize()`` around each timed region on GPU.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data import num_classes_key  # noqa: E402
from common.export.project import project_config_adders, setup_project_cfg  # noqa: E402


def discover_config_adders(projects: Optional[List[str]] = None) -> Dict[str, Callable]:
    """``{"<Name>.<pkg>.add_x_config": fn}`` for ``projects/<Name>/<pkg>/config.py`` files.

    Raises:
        ValueError: a name in ``projects`` has no config module.
    """
    names = projects if projects is not None else sorted(p.name for p in (REPO_ROOT / "projects").iterdir() if p.is_dir())
    missing = [n for n in names if not list((REPO_ROOT / "projects" / n).glob("*/config.py"))]
    if missing:
        raise ValueError(f"--project {sorted(missing)}: no projects/<Name>/<pkg>/config.py found")
    adders: Dict[str, Callable] = {}
    for name in names:
        for fn in project_config_adders(REPO_ROOT / "projects" / name):
            adders[f"{name}.{fn.__module__.split('.')[2]}.{fn.__name__}"] = fn
    return adders


def setup_cfg(args):
    """The config's own project adders (or those of ``--project``), the file, the opts."""
    dirs = [REPO_ROOT / "projects" / n for n in args.project] if args.project else None
    if args.project:
        discover_config_adders(args.project)  # clear error for an unknown name
    cfg = setup_project_cfg(args.config_file, args.opts, freeze=False, project_dirs=dirs)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""  # speed does not depend on weights; avoids downloads
    cfg.freeze()
    return cfg


def _num_classes(cfg) -> int:
    key = num_classes_key(cfg)
    node = cfg
    for part in (key or "MODEL.ROI_HEADS.NUM_CLASSES").split("."):
        node = node[part]
    return int(node)


# ``--image-size H W``: the synthetic image size instead of the test size with a 4:3 aspect.
_IMAGE_SIZE: Optional[tuple] = None


def _test_hw(cfg) -> tuple:
    if _IMAGE_SIZE is not None:
        return _IMAGE_SIZE
    short = cfg.INPUT.MIN_SIZE_TEST
    long = min(int(short * 4 / 3 + 0.5), cfg.INPUT.MAX_SIZE_TEST)
    return short, long


def synthetic_batch(cfg, batch_size: int, seed: int) -> List[dict]:
    """``batch_size`` random uint8 images of the test size, each with 1-5 random GT boxes."""
    from common.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = _test_hw(cfg)
    k = _num_classes(cfg)
    batch = []
    for _ in range(batch_size):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = (torch.rand(n, 2, generator=g) * 0.25 + 0.05) * torch.tensor([w, h])
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, k, (n,), generator=g)
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "height": h, "width": w, "instances": inst})
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_train(cfg, model, data, num_iter: int, warmup: int) -> float:
    """Iterations per second of forward + backward + optimizer step."""
    from common.solver import build_optimizer

    device = torch.device(cfg.MODEL.DEVICE)
    model.train()
    optimizer = build_optimizer(cfg, model)
    start = 0.0
    for i in range(warmup + num_iter):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        loss_dict = model(next(data))
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
    _sync(device)
    return num_iter / (time.perf_counter() - start)


@torch.no_grad()
def benchmark_inference(cfg, model, num_iter: int, warmup: int) -> float:
    """Milliseconds per image at batch size 1."""
    device = torch.device(cfg.MODEL.DEVICE)
    model.eval()
    inputs = [[{k: v for k, v in x.items() if k != "instances"}] for x in synthetic_batch(cfg, 2, seed=1)]
    for i in range(warmup):
        model(inputs[i % 2])
    _sync(device)
    start = time.perf_counter()
    for i in range(num_iter):
        model(inputs[i % 2])
    _sync(device)
    return (time.perf_counter() - start) * 1000.0 / num_iter


@torch.no_grad()
def saccade_crops_per_image(cfg, model) -> Optional[float]:
    """Mean number of zoomed crops of CornerNet-Saccade's inference on the inputs that
    :func:`benchmark_inference` times (None for other models)."""
    if not hasattr(model, "saccade_inference"):
        return None
    model.eval()
    inputs = synthetic_batch(cfg, 2, seed=1)
    return sum(model.saccade_inference(x["image"])[3]["num_crops"] for x in inputs) / len(inputs)


def _train_data(cfg, kind: str):
    if kind == "synthetic":
        batches = [synthetic_batch(cfg, cfg.SOLVER.IMS_PER_BATCH, seed=s) for s in range(2)]
        return itertools.cycle(batches)
    from common.data import build_detection_train_loader

    return iter(build_detection_train_loader(cfg))


@torch.no_grad()
def benchmark_onnx(cfg, model, num_iter: int, warmup: int) -> dict:
    """Milliseconds per image (batch 1, CPU) of the exported graph (``common.export.wrappers``:
    backbone + head + top-k) in PyTorch eager and in onnxruntime, on the same synthetic input.

    The model is exported to a temporary ``.onnx`` (``torch.onnx`` dynamo exporter). Both
    runtimes use ``torch.get_num_threads()`` intra-op threads.
    """
    import tempfile

    from common.export.export import OnnxRuntimeRunner, export_onnx
    from common.export.wrappers import build_export_wrapper

    model = model.cpu().eval()
    wrapper = build_export_wrapper(model, cfg.MODEL.META_ARCHITECTURE)
    sample = [{k: v for k, v in synthetic_batch(cfg, 1, seed=1)[0].items() if k != "instances"}]
    inputs, _ = wrapper.preprocess(sample)
    with tempfile.TemporaryDirectory() as tmp:
        runner = OnnxRuntimeRunner(export_onnx(wrapper, inputs, f"{tmp}/model.onnx"), num_threads=torch.get_num_threads())
    timings = {}
    for name, fn in (("eager", lambda: wrapper(*inputs)), ("onnxruntime", lambda: runner(*inputs))):
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        for _ in range(num_iter):
            fn()
        timings[name] = (time.perf_counter() - start) * 1000.0 / num_iter
    return {"input": "x".join(str(v) for v in inputs[0].shape), "eager ms/img": round(timings["eager"], 1),
            "onnxruntime ms/img": round(timings["onnxruntime"], 1),
            "onnxruntime / eager": round(timings["onnxruntime"] / timings["eager"], 3)}


def benchmark_coco_evaluators(json_file: str, repeats: int = 3, seed: int = 0) -> List[dict]:
    """Seconds of one box evaluation (loadRes + evaluate + accumulate + summarize) per COCOeval backend.

    The ground truth is ``json_file`` (a COCO instances json); the predictions are synthetic: every
    GT box twice with 10% jitter (80% with its own class) plus 15 random boxes per image. The
    best of ``repeats`` runs is reported for ``pycocotools`` and, when installed, ``faster_coco_eval``.
    """
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO

    from common.evaluation.coco_evaluation import _evaluate_predictions_on_coco, resolve_evaluator_backend

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
    rng = np.random.default_rng(seed)
    cat_ids = np.asarray(sorted(gt.getCatIds()))
    anns = gt.dataset["annotations"]
    boxes = np.repeat(np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4), 2, axis=0)
    cats = np.repeat(np.asarray([a["category_id"] for a in anns]), 2)
    img_of = np.repeat(np.asarray([a["image_id"] for a in anns]), 2)
    boxes += rng.normal(0, 0.1, boxes.shape) * np.repeat(boxes[:, 2:], 2, axis=1)
    cats = np.where(rng.random(len(cats)) < 0.8, cats, rng.choice(cat_ids, len(cats)))
    img_ids = np.asarray(sorted(gt.getImgIds()))
    img_of = np.concatenate([img_of, np.repeat(img_ids, 15)])
    rand = np.concatenate([rng.random((15 * len(img_ids), 2)) * 400, 8 + rng.random((15 * len(img_ids), 2)) * 150], 1)
    boxes = np.concatenate([boxes, rand])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
    cats = np.concatenate([cats, rng.choice(cat_ids, 15 * len(img_ids))])
    scores = rng.random(len(cats))
    results = [{"image_id": int(i), "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
               for i, c, b, s in zip(img_of, cats, boxes, scores)]
    backends = ["pycocotools"]
    try:
        backends.append(resolve_evaluator_backend("faster_coco_eval"))
    except ImportError as e:
        print(f"faster-coco-eval not timed: {e}")
    rows = []
    for backend in backends:
        times, ap = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ap = _evaluate_predictions_on_coco(gt, results, "bbox", backend=backend).stats[0]
            times.append(time.perf_counter() - start)
        rows.append({"backend": backend, "images": len(img_ids), "detections": len(results),
                     "eval s (best of %d)" % repeats: round(min(times), 3), "AP": round(100 * float(ap), 3)})
    base = rows[0]["eval s (best of %d)" % repeats]
    for r in rows:
        r["speed-up"] = round(base / max(r["eval s (best of %d)" % repeats], 1e-9), 2)
    return rows


def compare_configs(args, config_files: List[str]) -> List[dict]:
    """Parameters, train it/s and inference ms/image of several configs in one run (same
    process, device, image size, iterations and overrides), printed as one table.

    Inference is timed first, on the initial weights (training from random weights at the
    configs' learning rate may diverge, and NaN scores would leave post-processing nothing to do)."""
    from tabulate import tabulate

    from common.modeling import build_model

    rows = []
    for config_file in config_files:
        cfg = setup_cfg(argparse.Namespace(**dict(vars(args), config_file=config_file)))
        torch.manual_seed(0)
        model = build_model(cfg)
        infer_ms = benchmark_inference(cfg, model, args.num_iter, max(args.warmup, 1))
        crops = saccade_crops_per_image(cfg, model)
        train_its = None
        if not args.skip_train:
            train_its = benchmark_train(cfg, model, _train_data(cfg, args.data), args.num_iter, args.warmup)
        h, w = _test_hw(cfg)
        rows.append({
            "config": Path(config_file).name,
            "device": cfg.MODEL.DEVICE,
            "input": f"{h}x{w}",
            "params (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            f"train it/s (bs {cfg.SOLVER.IMS_PER_BATCH})": "-" if train_its is None else round(train_its, 3),
            "inference ms/img": round(infer_ms, 1),
            "saccade crops/img": "-" if crops is None else round(crops, 1),
        })
        del model
    print(tabulate(rows, headers="keys", tablefmt="pipe"))
    return rows


# --------------------------------------------------------------------- torchvision speed reference
TORCHVISION_REFERENCES = ("fcos_resnet50_fpn",)


def _torchvision_fcos_resnet50_fpn(num_classes: int, h: int, w: int):
    """torchvision's ``fcos_resnet50_fpn`` built as with pretrained weights (FrozenBN, 3 trainable
    stages, P6/P7 from P5) but randomly initialised; its transform keeps ``h x w`` images as they are,
    score threshold 0.05 as FCOS's."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3,
                                     returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, num_classes, min_size=min(h, w), max_size=max(h, w), score_thresh=0.05)


def benchmark_torchvision_reference(name: str, cfg, num_iter: int, warmup: int, skip_train: bool = False) -> dict:
    """One table row for torchvision's ``name`` on the synthetic images of ``cfg`` (same size, boxes,
    batch size, device and iteration counts as the project model): params, train it/s (SGD, lr 0.01),
    inference ms/image at batch size 1.

    Raises:
        ValueError: ``name`` not in :data:`TORCHVISION_REFERENCES`.
    """
    if name not in TORCHVISION_REFERENCES:
        raise ValueError(f"--torchvision-reference must be one of {TORCHVISION_REFERENCES}, got {name!r}")
    device = torch.device(cfg.MODEL.DEVICE)
    h, w = _test_hw(cfg)
    torch.manual_seed(0)
    model = _torchvision_fcos_resnet50_fpn(_num_classes(cfg), h, w).to(device)

    def to_tv(batch):
        images = [x["image"].to(device).float().flip(0) / 255.0 if cfg.INPUT.FORMAT == "BGR"
                  else x["image"].to(device).float() / 255.0 for x in batch]
        targets = [{"boxes": x["instances"].gt_boxes.tensor.to(device),
                    "labels": x["instances"].gt_classes.to(device)} for x in batch]
        return images, targets

    train_its = None
    if not skip_train:
        batches = itertools.cycle([to_tv(synthetic_batch(cfg, cfg.SOLVER.IMS_PER_BATCH, seed=s)) for s in range(2)])
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        start = 0.0
        for i in range(warmup + num_iter):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            images, targets = next(batches)
            losses = sum(model(images, targets).values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
        _sync(device)
        train_its = num_iter / (time.perf_counter() - start)
    model.eval()
    inputs = [to_tv(synthetic_batch(cfg, 1, seed=s))[0] for s in (1, 2)]
    with torch.no_grad():
        for i in range(max(warmup, 1)):
            model(inputs[i % 2])
        _sync(device)
        start = time.perf_counter()
        for i in range(num_iter):
            model(inputs[i % 2])
        _sync(device)
    infer_ms = (time.perf_counter() - start) * 1000.0 / num_iter
    return {
        "config": f"torchvision {name} (random weights)",
        "device": cfg.MODEL.DEVICE,
        "input": f"{h}x{w}",
        "params (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        f"train it/s (bs {cfg.SOLVER.IMS_PER_BATCH})": "-" if train_its is None else round(train_its, 3),
        "inference ms/img": round(infer_ms, 1),
    }


# --------------------------------------------------------------------- corner pooling (CornerNet)
def benchmark_corner_pool(shape=(4, 128, 128, 128), repeats: int = 3, device: str = "cpu") -> List[dict]:
    """Forward + backward time of :func:`common.ops.top_pool` (``torch.cummax`` with the authors'
    arg-max backward) against a naive loop over rows (``out[i] = max(x[i], out[i + 1])``, the
    authors' C++ forward, autograd through ``torch.maximum``), on an ``(N, C, H, W)`` random map
    (default: one CornerNet pooling branch at 511x511 input, batch 4). Best of ``repeats``, ms."""
    from tabulate import tabulate

    from common.ops import top_pool

    def naive(x):
        rows = [x[:, :, -1]]
        for i in range(x.shape[2] - 2, -1, -1):
            rows.append(torch.maximum(x[:, :, i], rows[-1]))
        return torch.stack(rows[::-1], 2)

    x0 = torch.randn(*shape, device=device)
    rows = []
    for name, fn in (("common.ops.top_pool", top_pool), ("naive row loop", naive)):
        times = []
        for _ in range(repeats + 1):
            x = x0.clone().requires_grad_(True)
            _sync(x.device)
            start = time.perf_counter()
            fn(x).sum().backward()
            _sync(x.device)
            times.append(time.perf_counter() - start)
        rows.append({"pool": name, "shape": "x".join(map(str, shape)), "device": device,
                     "fwd+bwd ms (best)": round(1000 * min(times[1:]), 2)})
    base = rows[1]["fwd+bwd ms (best)"]
    for r in rows:
        r["speed-up"] = round(base / max(r["fwd+bwd ms (best)"], 1e-9), 2)
    print(tabulate(rows, headers="keys", tablefmt="pipe"))
    return rows


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default="", metavar="FILE", help="required except with --evaluator")
    parser.add_argument("--evaluator", default="", metavar="JSON",
                        help="only time the COCOeval backends (pycocotools vs faster-coco-eval) on this COCO json")
    parser.add_argument("--num-iter", type=int, default=20, help="timed iterations (train and inference)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before timing")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="overrides MODEL.DEVICE")
    parser.add_argument("--project", action="append", default=None,
                        help="project folder(s) whose add_*_config to apply (default: the config's own project)")
    parser.add_argument("--compare-config", action="append", default=[], metavar="FILE",
                        help="also benchmark FILE in the same run, one table row per config (e.g. AutoAssign next to FCOS)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="synthetic image size (default: the test size, 4:3), e.g. 800 1333")
    parser.add_argument("--data", choices=["synthetic", "train"], default="synthetic")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--corner-pool", action="store_true", help="corner pooling fwd+bwd vs a naive loop (CornerNet)")
    parser.add_argument("--torchvision-reference", default="", choices=("",) + TORCHVISION_REFERENCES,
                        help="also time this torchvision model on the same images (speed reference)")
    parser.add_argument("--format", choices=["pytorch", "onnx"], default="pytorch",
                        help="onnx: also time the exported graph in PyTorch eager vs onnxruntime (CPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.corner_pool:
        return {"rows": benchmark_corner_pool(device=args.device or "cpu")}
    if args.evaluator:
        from tabulate import tabulate

        rows = benchmark_coco_evaluators(args.evaluator)
        print(tabulate(rows, headers="keys", tablefmt="pipe"))
        return {"evaluator": rows}
    if not args.config_file:
        parser.error("--config-file is required (unless --evaluator JSON)")
    global _IMAGE_SIZE
    _IMAGE_SIZE = tuple(args.image_size) if args.image_size else None
    if args.compare_config:
        return {"rows": compare_configs(args, [args.config_file] + args.compare_config)}
    if args.num_iter < 1 or args.warmup < 0:
        parser.error("--num-iter must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")

    from tabulate import tabulate

    from common.modeling import build_model

    cfg = setup_cfg(args)
    torch.manual_seed(0)
    model = build_model(cfg)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    train_its = None
    if not args.skip_train:
        train_its = benchmark_train(cfg, model, _train_data(cfg, args.data), args.num_iter, args.warmup)
    infer_ms = benchmark_inference(cfg, model, args.num_iter, max(args.warmup, 1))
    crops = saccade_crops_per_image(cfg, model)
    row = {
        "config": Path(args.config_file).name,
        "device": cfg.MODEL.DEVICE,
        "params (M)": round(params_m, 2),
        f"train it/s (bs {cfg.SOLVER.IMS_PER_BATCH})": "-" if train_its is None else round(train_its, 3),
        "inference ms/img": round(infer_ms, 1),
    }
    if crops is not None:
        row["saccade crops/img"] = round(crops, 1)
    print(tabulate([row], headers="keys", tablefmt="pipe"))
    if args.torchvision_reference:
        row["reference"] = benchmark_torchvision_reference(args.torchvision_reference, cfg, args.num_iter,
                                                           max(args.warmup, 1), args.skip_train)
        print(tabulate([row["reference"]], headers="keys", tablefmt="pipe"))
    if args.format == "onnx":
        row["onnx"] = benchmark_onnx(cfg, model, args.num_iter, max(args.warmup, 1))
        print(tabulate([row["onnx"]], headers="keys", tablefmt="pipe"))
    return row


if __name__ == "__main__":
    main()
