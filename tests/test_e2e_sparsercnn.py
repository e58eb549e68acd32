"""End-to-end: Sparse R-CNN trained, evaluated, resumed and demoed on the bundled real images.

The command-line tests run ``projects/SparseRCNN/train_net.py`` and ``demo.py`` exactly as a
user does (subprocesses, the small CPU config, tiny input sizes and few iterations).
``test_overfit_eight_real_images`` is the correctness test: Sparse R-CNN trained on 8 real BCCD
images must reach AP50 >= 0.5 on those images through ``COCOEvaluator``, which only happens
when data loading, targets, matching, losses, box decoding and evaluation agree.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import copypaste_metrics, register_bccd_subset, run_script, train_and_test

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "SparseRCNN"
SMALL_CFG = PROJECT / "configs" / "sparsercnn.bccd.res18.yaml"

# Tiny and quick: 128-160 px inputs, 2 images per step, no workers.
FAST_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(128, 160)", "INPUT.MAX_SIZE_TRAIN", "213",
    "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "213",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "MODEL.SparseRCNN.NUM_PROPOSALS", "20",
    "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
]


_run = run_script
_copypaste_metrics = copypaste_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run of the small config through the real CLI."""
    out = tmp_path_factory.mktemp("sparsercnn_cli")
    log = _run(
        PROJECT / "train_net.py", "--config-file", str(SMALL_CFG),
        *FAST_OPTS, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
        "OUTPUT_DIR", str(out),
    )
    return out, log


def test_cli_train_writes_detectron2_outputs(trained):
    out, log = trained
    for name in ("config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_final.pth",
                 "model_0000002.pth", "model_0000005.pth", "inference/coco_instances_results.json"):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"
    records = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    train_records = [r for r in records if "total_loss" in r]
    assert train_records and all(np.isfinite(r["total_loss"]) for r in train_records)
    assert {"loss_ce", "loss_bbox", "loss_giou", "lr", "time"} <= set(train_records[-1])
    assert any("bbox/AP50" in r for r in records), "evaluation results not in metrics.json"
    dets = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    # bccd_val: 72 images, NUM_PROPOSALS=20 detections each (no NMS, no score threshold),
    # minus boxes that detector_postprocess drops as empty.
    assert 0 < len(dets) <= 72 * 20
    assert {d["category_id"] for d in dets} <= {1, 2, 3}
    assert "Per-category bbox AP" in log or "AP-RBC" in log


def test_cli_eval_only_reproduces_ap(trained):
    out, log = trained
    ap_train = _copypaste_metrics(log)
    eval_dir = out / "eval_only"
    log2 = _run(
        PROJECT / "train_net.py", "--config-file", str(SMALL_CFG), "--eval-only",
        *FAST_OPTS, "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(eval_dir),
    )
    ap_eval = _copypaste_metrics(log2)
    np.testing.assert_allclose(ap_eval, ap_train, atol=1e-4, equal_nan=True)
    a = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    b = json.loads((eval_dir / "inference" / "coco_instances_results.json").read_text())
    assert len(a) == len(b)


def test_cli_resume_continues_from_saved_iteration(trained, tmp_path):
    out, _ = trained
    # A run that died after the checkpoint of iteration 3 (model_0000002.pth): copy it alone.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "model_0000002.pth").write_bytes((out / "model_0000002.pth").read_bytes())
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    log = _run(
        PROJECT / "train_net.py", "--config-file", str(SMALL_CFG), "--resume",
        *FAST_OPTS, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
        "DATASETS.TEST", "()", "OUTPUT_DIR", str(resumed),
    )
    assert re.search(r"Starting training from iteration 3\b", log), log[-3000:]
    iters = [json.loads(l)["iteration"] for l in (resumed / "metrics.json").read_text().splitlines()]
    assert min(iters) >= 3 and max(iters) == 5
    assert (resumed / "last_checkpoint").read_text().strip() == "model_final.pth"


def test_demo_draws_detections_with_class_names(trained, tmp_path, bccd_root):
    out, _ = trained
    images = sorted((bccd_root / "images").glob("*.jpg"))[:2]
    vis = tmp_path / "vis"
    log = _run(
        PROJECT / "demo.py", "--config-file", str(SMALL_CFG), "--input", *map(str, images),
        "--output", str(vis), "--confidence-threshold", "0.0",
        "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"), *FAST_OPTS,
        # The checkpoint carries the class names: the demo must not need the dataset.
        "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
    )
    import cv2

    for img in images:
        drawn = cv2.imread(str(vis / img.name))
        assert drawn is not None, log[-3000:]
        original = cv2.imread(str(img))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original.astype(int)).sum() > 0, "nothing was drawn"
    assert "detected" in log


def test_cli_two_cpu_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    log = _run(
        PROJECT / "train_net.py", "--config-file", str(SMALL_CFG), "--num-gpus", "2",
        *FAST_OPTS, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100",
        "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
    )
    assert (out / "model_final.pth").is_file(), log[-3000:]
    assert (out / "log.txt.rank1").is_file(), "the second process did not run"
    assert re.search(r"world size:?\s*2|world_size=2|2 processes|num_gpus=2", log, re.I), log[-3000:]


# ---------------------------------------------------------------------------------------------
# Overfitting 8 real images: the correctness test.


def test_overfit_eight_real_images(tmp_path, bccd_root):
    from common.config import get_cfg
    from projects.SparseRCNN.sparsercnn import add_sparsercnn_config

    # 8 real training images with their human boxes, as a COCO json of its own.
    name = register_bccd_subset(bccd_root, tmp_path, "bccd_overfit8_e2e")

    cfg = get_cfg()
    add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(SMALL_CFG))
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "213",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "213",
        "MODEL.SparseRCNN.NUM_PROPOSALS", "50",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.0005",
        "SOLVER.MAX_ITER", "300", "SOLVER.STEPS", "(250,)",
        "SOLVER.WARMUP_ITERS", "20", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0", "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    cfg.freeze()

    results = train_and_test(PROJECT, cfg)
    ap50 = results["bbox"]["AP50"]
    print("overfit-8 bbox results:", results["bbox"])
    assert ap50 >= 50.0, results["bbox"]
