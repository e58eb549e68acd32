"""End-to-end OneNet on the bundled real BCCD images.

``test_overfit_eight_real_images`` is the correctness test: OneNet (R-18, plain-conv neck, from
scratch) trained on 8 real BCCD images must reach AP50 >= 0.5 on those images through
``COCOEvaluator`` with NMS disabled in the inference path (the NMS helper is replaced by one that
fails). ``test_cli_train_eval_only_demo`` runs ``train_net.py`` / ``demo.py`` as a user does.
"""
from __future__ import annotations

import json
from pathlib import Path

from e2e_helpers import bccd_subset_json, copypaste_metrics, register_bccd_subset, registering_script, run_script, train_and_test

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "OneNet"
SMALL_CFG = PROJECT / "configs" / "onenet.bccd.res18.yaml"

FAST_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "171",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "171",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "DATASETS.TEST", "('bccd_val_onenet_cli',)",
]


_run = run_script
_copypaste_metrics = copypaste_metrics


def _subset_json(bccd_root: Path, split: str, n: int, path: Path) -> Path:
    return bccd_subset_json(bccd_root, path, n, split)


def test_cli_train_eval_only_demo(tmp_path, bccd_root):
    # The CLI registers no extra datasets: evaluate on a 6-image val subset through a tiny
    # wrapper that registers it, then runs the real train_net.py main.
    sub = _subset_json(bccd_root, "val", 6, tmp_path / "val6.json")
    wrapper = registering_script(PROJECT, tmp_path / "train_net_cli.py", 'bccd_val_onenet_cli', sub, bccd_root / "images")
    out = tmp_path / "train"
    log = _run(wrapper, "--config-file", str(SMALL_CFG), *FAST_OPTS, "SOLVER.MAX_ITER", "3",
               "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out))
    for name in ("config.yaml", "metrics.json", "model_final.pth", "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    assert all(np.isfinite(r["total_loss"]) for r in records if "total_loss" in r)

    log2 = _run(wrapper, "--config-file", str(SMALL_CFG), "--eval-only", *FAST_OPTS,
                "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    np.testing.assert_allclose(_copypaste_metrics(log2), _copypaste_metrics(log), atol=1e-4, equal_nan=True)
    dets = json.loads((tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text())
    assert 0 < len(dets) <= 6 * 100 and {d["category_id"] for d in dets} <= {1, 2, 3}

    image = sorted((bccd_root / "images").glob("*.jpg"))[0]
    vis = tmp_path / "vis"
    log3 = _run(PROJECT / "demo.py", "--config-file", str(SMALL_CFG), "--input", str(image), "--output", str(vis),
                "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                *FAST_OPTS[:8], "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    import cv2

    drawn = cv2.imread(str(vis / image.name))
    assert drawn is not None, log3[-3000:]
    assert drawn.shape == cv2.imread(str(image)).shape


def test_overfit_eight_real_images(tmp_path, bccd_root, monkeypatch):
    from common.config import get_cfg
    import projects.OneNet.onenet.detector as detector
    from projects.OneNet.onenet import add_onenet_config

    def no_nms(*args, **kwargs):
        raise AssertionError("OneNet inference must not run NMS")

    monkeypatch.setattr(detector, "batched_nms", no_nms)

    name = register_bccd_subset(bccd_root, tmp_path, "bccd_overfit8_onenet")

    cfg = get_cfg()
    add_onenet_config(cfg)
    cfg.merge_from_file(str(SMALL_CFG))
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "213",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "213",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.002",
        "SOLVER.MAX_ITER", "120", "SOLVER.STEPS", "(100,)",
        "SOLVER.WARMUP_ITERS", "10", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0", "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    cfg.freeze()
    assert not cfg.MODEL.OneNet.NMS

    results = train_and_test(PROJECT, cfg)
    print("OneNet overfit-8 bbox results:", results["bbox"])
    assert results["bbox"]["AP50"] >= 50.0, results["bbox"]
