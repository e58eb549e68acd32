"""End-to-end CenterNet on the bundled real BCCD images.

``test_cli_train_eval_only_demo``: the small config through ``train_net.py`` (a few iterations),
``--eval-only`` reproduces the AP, ``demo.py`` draws detections. ``test_overfit_eight_real_images``:
trained on 8 real images (ResNet-18 plain-deconv from scratch, 96x128 input, 200 Adam iterations), the model
must reach AP50 >= 50 on them through ``COCOEvaluator`` (seeded: 88.6 on 1 thread, 93.7 on 2).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "CenterNet"
SMALL_CFG = PROJECT / "configs" / "centernet.bccd.res18.yaml"
FAST_OPTS = ["INPUT.CENTERNET.TRAIN_SIZE", "(128, 128)", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
             "INPUT.CENTERNET.BORDER", "32", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
             "SOLVER.STEPS", "()", "DATASETS.TEST", "('bccd_overfit_cli',)"]


def _run(script: Path, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def _copypaste(log: str) -> list:
    lines = [l for l in log.splitlines() if "copypaste:" in l]
    assert len(lines) >= 2, log[-3000:]
    return [float(v) for v in lines[-1].split("copypaste:")[1].strip().split(",")]


def _subset_json(bccd_root: Path, path: Path, n: int) -> Path:
    full = json.loads((bccd_root / "annotations_train.json").read_text())
    images = full["images"][:n]
    ids = {im["id"] for im in images}
    path.write_text(json.dumps(dict(full, images=images, annotations=[a for a in full["annotations"] if a["image_id"] in ids])))
    return path


def test_cli_train_eval_only_demo(tmp_path, bccd_root):
    # The test set is 4 training images registered by a tiny wrapper script, to keep the CLI fast.
    js = _subset_json(bccd_root, tmp_path / "cli4.json", 4)
    wrapper = tmp_path / "train_cli.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from common.data.datasets import register_coco_instances\n"
        f"register_coco_instances('bccd_overfit_cli', {{}}, {str(js)!r}, {str(bccd_root / 'images')!r})\n"
        f"runpy.run_path({str(PROJECT / 'train_net.py')!r}, run_name='__main__')\n"
    )
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
    from common.data import DatasetCatalog, MetadataCatalog
    from common.data.datasets import register_coco_instances
    from common.utils.env import seed_all_rng
    from projects.CenterNet.centernet import add_centernet_config

    name = "bccd_overfit8_centernet"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(_subset_json(bccd_root, tmp_path / "o8.json", 8)), str(bccd_root / "images"))
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
        "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
        "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    cfg.freeze()
    spec = importlib.util.spec_from_file_location("centernet_train_net", PROJECT / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    logger = logging.getLogger("common")
    saved = (logger.propagate, list(logger.handlers))
    try:
        seed_all_rng(0)  # as default_setup does from SEED in the CLI: same images, order and flips every run
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        results = train_net.Trainer.test(cfg, trainer.model)
    finally:
        logger.propagate, logger.handlers[:] = saved[0], saved[1]
    print("overfit-8 bbox results:", results["bbox"])
    assert results["bbox"]["AP50"] >= 50.0, results["bbox"]
