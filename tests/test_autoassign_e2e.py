"""End-to-end AutoAssign on the bundled real BCCD images.

``test_overfit_eight_real_images`` is the correctness test: AutoAssign (R-18 FPN, from scratch,
seeded) trained on 8 real BCCD images must reach AP50 >= 0.5 on those images through
``COCOEvaluator``; the centre-prior plot of the trained model is written from its checkpoint.
``test_cli_train_eval_only_demo`` runs ``train_net.py`` (train, then ``--eval-only`` on the saved
model must reproduce the AP) and ``demo.py`` as a user does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from e2e_helpers import bccd_subset_json, copypaste_metrics, overfit_opts, register_bccd_subset, registering_script, run_script, train_and_test

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "AutoAssign"
SMALL_CFG = PROJECT / "configs" / "autoassign.bccd.res18.yaml"

# Score threshold 0 so that a 3-iteration model still outputs detections to compare and draw.
FAST_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "171",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "171",
    "MODEL.AUTOASSIGN.SCORE_THRESH_TEST", "0.0",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "DATASETS.TEST", "('bccd_val_autoassign_cli',)",
]


def test_cli_train_eval_only_demo(tmp_path, bccd_root):
    sub = bccd_subset_json(bccd_root, tmp_path / "val4.json", 4, "val")
    wrapper = registering_script(PROJECT, tmp_path / "train_net_cli.py", 'bccd_val_autoassign_cli', sub, bccd_root / "images")
    out = tmp_path / "train"
    log = run_script(wrapper, "--config-file", str(SMALL_CFG), *FAST_OPTS, "SOLVER.MAX_ITER", "3",
                     "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out))
    for name in ("config.yaml", "metrics.json", "model_final.pth", "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    assert all(np.isfinite(r["total_loss"]) for r in records if "total_loss" in r)
    assert all({"loss_pos", "loss_neg", "loss_norm"} <= set(r) for r in records if "total_loss" in r)

    log2 = run_script(wrapper, "--config-file", str(SMALL_CFG), "--eval-only", *FAST_OPTS,
                      "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    np.testing.assert_allclose(copypaste_metrics(log2), copypaste_metrics(log), atol=1e-4, equal_nan=True)
    dets = json.loads((tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text())
    assert 0 < len(dets) <= 4 * 100 and {d["category_id"] for d in dets} <= {1, 2, 3}

    import cv2

    image = sorted((bccd_root / "images").glob("*.jpg"))[0]
    vis = tmp_path / "vis"
    log3 = run_script(PROJECT / "demo.py", "--config-file", str(SMALL_CFG), "--input", str(image), "--output", str(vis),
                      "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                      *FAST_OPTS[:10], "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    drawn, original = cv2.imread(str(vis / image.name)), cv2.imread(str(image))
    assert drawn is not None, log3[-3000:]
    assert drawn.shape == original.shape
    assert (np.abs(drawn.astype(int) - original.astype(int)).max(axis=2) > 30).mean() > 0.001  # boxes drawn


def test_overfit_eight_real_images(tmp_path, bccd_root):
    from common.config import get_cfg
    from projects.AutoAssign.autoassign import add_autoassign_config

    name = register_bccd_subset(bccd_root, tmp_path, "bccd_overfit8_autoassign")
    iters = 100
    cfg = get_cfg()
    add_autoassign_config(cfg)
    cfg.merge_from_file(str(SMALL_CFG))
    cfg.merge_from_list(overfit_opts(name, iters, tmp_path / "out"))
    cfg.freeze()
    results = train_and_test(PROJECT, cfg)
    print("AutoAssign overfit-8 bbox results:", results["bbox"])
    assert results["bbox"]["AP50"] >= 50.0, results["bbox"]

    # The centre-prior figure of the trained model, from its checkpoint (3 classes, names from the metadata).
    import cv2
    import torch

    sys.path.insert(0, str(REPO / "tools"))
    from plot_center_prior import load_center_prior, main as plot_main

    ckpt = tmp_path / "out" / "model_final.pth"
    mu, sigma, names = load_center_prior(str(ckpt))
    assert mu.shape == (3, 2) and names == ["RBC", "WBC", "Platelets"]
    assert np.abs(mu).max() > 1e-3 and np.abs(sigma - 1).max() > 1e-3  # learned, not the init (0, 1)
    np.testing.assert_allclose(mu, torch.load(ckpt, weights_only=True)["model"]["mu"].numpy())
    png = plot_main([str(ckpt), "--output", str(tmp_path / "prior.png")])
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] > image.shape[0]  # three panels side by side
