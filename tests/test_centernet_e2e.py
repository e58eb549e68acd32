"""End-to-end CenterNet on the bundled real BCCD images.

``test_cli_train_eval_only_demo``: the small config through ``train_net.py`` (a few iterations),
``--eval-only`` reproduces the AP, ``demo.py`` draws detections. ``test_overfit_eight_real_images``:
trained on 8 real images (ResNet-18 plain-deconv from scratch, 96x128 input, 200 Adam iterations), the model
must reach AP50 >= 50 on them through ``COCOEvaluator`` (seeded, 2 threads: 94.4).
"""
from __future__ import annotations

from pathlib import Path

from e2e_helpers import assert_overfits, bccd_subset_json, copypaste_metrics, register_bccd_subset, registering_script, run_script

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "CenterNet"
SMALL_CFG = PROJECT / "configs" / "centernet.bccd.res18.yaml"
FAST_OPTS = ["INPUT.CENTERNET.TRAIN_SIZE", "(128, 128)", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
             "INPUT.CENTERNET.BORDER", "32", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
             "SOLVER.STEPS", "()", "DATASETS.TEST", "('bccd_overfit_cli',)"]


_run = run_script
_copypaste = copypaste_metrics


def _subset_json(bccd_root: Path, path: Path, n: int) -> Path:
    return bccd_subset_json(bccd_root, path, n)


def test_cli_train_eval_only_demo(tmp_path, bccd_root):
    # The test set is 4 training images registered by a tiny wrapper script, to keep the CLI fast.
    js = _subset_json(bccd_root, tmp_path / "cli4.json", 4)
    wrapper = registering_script(PROJECT, tmp_path / "train_cli.py", 'bccd_overfit_cli', js, bccd_root / "images")
    out = tmp_path / "out"
    log = _run(wrapper, "--config-file", str(SMALL_CFG), *FAST_OPTS, "SOLVER.MAX_ITER", "4",
               "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out))
    assert (out / "model_final.pth").is_file() and (out / "inference" / "coco_instances_results.json").is_file()
    log2 = _run(wrapper, "--config-file", str(SMALL_CFG), "--eval-only", *FAST_OPTS,
                "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    np.testing.assert_allclose(_copypaste(log2), _copypaste(log), atol=1e-4, equal_nan=True)

    image = sorted((bccd_root / "images").glob("*.jpg"))[0]
    vis = tmp_path / "vis"
    _run(PROJECT / "demo.py", "--config-file", str(SMALL_CFG), "--input", str(image), "--output", str(vis),
         "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
         "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    import cv2

    drawn, original = cv2.imread(str(vis / image.name)), cv2.imread(str(image))
    assert drawn is not None and drawn.shape == original.shape


def test_overfit_eight_real_images(tmp_path, bccd_root):
    from common.config import get_cfg
    from projects.CenterNet.centernet import add_centernet_config

    name = register_bccd_subset(bccd_root, tmp_path, "bccd_overfit8_centernet")
    cfg = get_cfg()
    add_centernet_config(cfg)
    cfg.merge_from_file(str(SMALL_CFG))
    # Train and test see the same geometry: a 640x480 image becomes exactly 128x96 in both (the
    # training warp of the whole image, no random crop/shift/scale; the test resize, padded to a
    # multiple of 32 at the top-left, i.e. not at all). With only 8 images and no translation
    # augmentation the from-scratch network also learns where the image borders are, so the
    # authors' centred (H | 31) + 1 test padding (32 extra pixels here) would shift its outputs.
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "INPUT.CENTERNET.TRAIN_SIZE", "(96, 128)", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
        "MODEL.CENTERNET.TEST_PAD_CENTERED", "False", "INPUT.CENTERNET.RANDOM_CROP", "False",
        "INPUT.CENTERNET.SHIFT", "0.0", "INPUT.CENTERNET.SCALE", "0.0", "INPUT.CENTERNET.COLOR_AUG", "False",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.002", "SOLVER.MAX_ITER", "200", "SOLVER.STEPS", "(170,)",
    ])
    assert_overfits(PROJECT, cfg, tmp_path / "out")
