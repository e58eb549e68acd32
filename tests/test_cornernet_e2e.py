"""End-to-end CornerNet / CenterNet-Triplets on the bundled real BCCD images.

``test_cli_train_eval_only_demo``: the small config through ``train_net.py`` (a few iterations),
``--eval-only`` reproduces the AP, ``demo.py`` draws detections. ``test_overfit_eight_real_images``:
trained from scratch on 8 real images (2-stack depth-3 hourglass, 127x127 crops at the test
scale, 400 Adam iterations), the model must reach AP50 >= 50 on them through ``COCOEvaluator``
(seeded, 2 threads: CornerNet 71.3, CenterNet-Triplets 61.8).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import assert_overfits, cli_train_eval_only_demo, register_bccd_subset

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "CornerNet"
CONFIGS = PROJECT / "configs"
FAST_OPTS = ["INPUT.CORNERNET.TRAIN_SIZE", "(127, 127)", "INPUT.MIN_SIZE_TEST", "95", "INPUT.MAX_SIZE_TEST", "127",
             "INPUT.CORNERNET.SCALES", "(5.0,)", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
             "SOLVER.STEPS", "()", "DATASETS.TEST", "('bccd_cornernet_cli',)"]


@pytest.mark.parametrize("config", ["cornernet.bccd.yaml", "centernet_triplets.bccd.yaml"])
def test_cli_train_eval_only_demo(tmp_path, bccd_root, config):
    # the demo script is the same for both meta-architectures: run it once
    cli_train_eval_only_demo(PROJECT, CONFIGS / config, tmp_path, bccd_root, "bccd_cornernet_cli", FAST_OPTS,
                             ["INPUT.MIN_SIZE_TEST", "95", "INPUT.MAX_SIZE_TEST", "127"],
                             demo=config == "cornernet.bccd.yaml")


@pytest.mark.parametrize("config", ["cornernet.bccd.yaml", "centernet_triplets.bccd.yaml"])
def test_overfit_eight_real_images(tmp_path, bccd_root, config):
    from common.config import get_cfg
    from projects.CornerNet.cornernet import add_cornernet_config

    name = register_bccd_subset(bccd_root, tmp_path, "bccd_overfit8_" + config.split(".")[0])
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    # Training crops (CornerNet random crop, windows of 127 x 4.5-5.5 px around random centres,
    # resized to 127x127) keep the objects at the test scale (the 640x480 images are tested at
    # 127x95, which the (H | 31) rule leaves unpadded) and teach the from-scratch network that
    # image borders move; no flip (so no flip test), no colour jitter.
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "INPUT.CORNERNET.TRAIN_SIZE", "(127, 127)", "INPUT.MIN_SIZE_TEST", "95", "INPUT.MAX_SIZE_TEST", "127",
        "INPUT.CORNERNET.RANDOM_CROP", "True", "INPUT.CORNERNET.SCALES", "(4.5, 5.0, 5.5)",
        "INPUT.CORNERNET.BORDER", "64", "INPUT.CORNERNET.COLOR_AUG", "False", "INPUT.RANDOM_FLIP", "none",
        "MODEL.CORNERNET.FLIP_TEST", "False",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.002", "SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "(340,)",
    ])
    assert_overfits(PROJECT, cfg, tmp_path / "out")
