"""End-to-end FCOS, ATSS and VFNet on the bundled real BCCD images.

``test_overfit_eight_real_images`` is the correctness test: each detector (R-18 FPN, from scratch,
seeded) trained on 8 real BCCD images must reach AP50 >= 0.5 on those images through
``COCOEvaluator``. ``test_cli_train_eval_only_demo`` runs ``train_net.py`` (train, then
``--eval-only`` on the saved model must reproduce the AP) and ``demo.py`` as a user does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import bccd_subset_json, copypaste_metrics, overfit_opts, register_bccd_subset, registering_script, run_script, train_and_test

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "FCOS_VFNet"
CONFIGS = PROJECT / "configs"

# Score threshold 0 so that a 3-iteration model still outputs detections to compare and draw.
THRESH_OFF = {"fcos": ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0"], "vfnet": ["MODEL.VFNET.SCORE_THRESH_TEST", "0.0"]}


def _fast_opts(val_name: str):
    return ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "171",
            "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "171",
            "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "DATASETS.TEST", f"('{val_name}',)"]


@pytest.mark.parametrize("arch", ["fcos", "vfnet"])
def test_cli_train_eval_only_demo(arch, tmp_path, bccd_root):
    cfg_file = str(CONFIGS / f"{arch}.bccd.res18.yaml")
    val_name = f"bccd_val_{arch}_cli"
    sub = bccd_subset_json(bccd_root, tmp_path / "val6.json", 6, "val")
    wrapper = registering_script(PROJECT, tmp_path / "train_net_cli.py", val_name, sub, bccd_root / "images")
    opts = _fast_opts(val_name) + THRESH_OFF[arch]
    out = tmp_path / "train"
    log = run_script(wrapper, "--config-file", cfg_file, *opts, "SOLVER.MAX_ITER", "3",
                     "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out))
    for name in ("config.yaml", "metrics.json", "model_final.pth", "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    assert all(np.isfinite(r["total_loss"]) for r in records if "total_loss" in r)

    log2 = run_script(wrapper, "--config-file", cfg_file, "--eval-only", *opts,
                      "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    np.testing.assert_allclose(copypaste_metrics(log2), copypaste_metrics(log), atol=1e-4, equal_nan=True)
    dets = json.loads((tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text())
    assert 0 < len(dets) <= 6 * 100 and {d["category_id"] for d in dets} <= {1, 2, 3}

    import cv2

    image = sorted((bccd_root / "images").glob("*.jpg"))[0]
    vis = tmp_path / "vis"
    log3 = run_script(PROJECT / "demo.py", "--config-file", cfg_file, "--input", str(image), "--output", str(vis),
                      "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                      *opts[:8], *THRESH_OFF[arch], "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    drawn, original = cv2.imread(str(vis / image.name)), cv2.imread(str(image))
    assert drawn is not None, log3[-3000:]
    assert drawn.shape == original.shape
    assert (np.abs(drawn.astype(int) - original.astype(int)).max(axis=2) > 30).mean() > 0.001  # boxes drawn


# Iterations per detector: from scratch, 160 px, 4 images per iteration, LR 0.01 with a drop at 80%.
OVERFIT = {"fcos": 70, "atss": 70, "vfnet": 100}


@pytest.mark.parametrize("arch", sorted(OVERFIT))
def test_overfit_eight_real_images(arch, tmp_path, bccd_root):
    from common.config import get_cfg
    from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config

    name = register_bccd_subset(bccd_root, tmp_path, f"bccd_overfit8_{arch}")
    iters = OVERFIT[arch]
    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{arch}.bccd.res18.yaml"))
    cfg.merge_from_list(overfit_opts(name, iters, tmp_path / "out"))
    cfg.freeze()
    results = train_and_test(PROJECT, cfg)
    print(f"{arch} overfit-8 bbox results:", results["bbox"])
    assert results["bbox"]["AP50"] >= 50.0, results["bbox"]
