"""Helpers shared by the end-to-end tests of the projects (real BCCD images, the real CLI)."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def run_script(script: Path, *args: str, timeout: int = 600) -> str:
    """Run a project script as a user does (from the repo root); returns stdout + stderr.

    Raises:
        AssertionError: non-zero exit, with the end of the output.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def copypaste_metrics(log: str) -> list[float]:
    """The numbers of detectron2's last ``copypaste:`` line (AP, AP50, AP75, APs, APm, APl)."""
    lines = [l for l in log.splitlines() if "copypaste:" in l]
    assert len(lines) >= 2, f"no evaluation table in the log:\n{log[-3000:]}"
    return [float(v) for v in lines[-1].split("copypaste:")[1].strip().split(",")]


def bccd_subset_json(bccd_root: Path, path: Path, n: int, split: str = "train") -> Path:
    """Write the first ``n`` images of BCCD's ``split`` (with their boxes) as a COCO json at ``path``."""
    full = json.loads((bccd_root / f"annotations_{split}.json").read_text())
    images = full["images"][:n]
    ids = {im["id"] for im in images}
    annotations = [a for a in full["annotations"] if a["image_id"] in ids]
    path.write_text(json.dumps(dict(full, images=images, annotations=annotations)))
    return path


def register_bccd_subset(bccd_root: Path, tmp_path: Path, name: str, n: int = 8) -> str:
    """Register (again, if needed) the first ``n`` BCCD training images as dataset ``name``."""
    from common.data import DatasetCatalog, MetadataCatalog
    from common.data.datasets import register_coco_instances

    json_file = bccd_subset_json(bccd_root, tmp_path / f"{name}.json", n)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_file), str(bccd_root / "images"))
    return name


def load_train_net(project_dir: Path) -> ModuleType:
    """Import ``<project_dir>/train_net.py`` as a module (for its ``Trainer``)."""
    spec = importlib.util.spec_from_file_location(f"{project_dir.name.lower()}_train_net", project_dir / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_and_test(project_dir: Path, cfg) -> dict:
    """Train with the project's ``Trainer`` then evaluate on ``DATASETS.TEST``; returns the results.

    Seeds every RNG from ``cfg.SEED`` as ``default_setup`` does in the CLI (same init, images,
    order and flips whatever ran before in this process), and restores the ``common`` logger,
    which training set-up reconfigures.
    """
    from common.utils.env import seed_all_rng

    train_net = load_train_net(project_dir)
    logger = logging.getLogger("common")
    saved = (logger.propagate, list(logger.handlers))
    try:
        seed_all_rng(cfg.SEED)
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        return train_net.Trainer.test(cfg, trainer.model)
    finally:
        logger.propagate, logger.handlers[:] = saved[0], saved[1]


def registering_script(project_dir: Path, path: Path, name: str, json_file: Path, image_root: Path) -> Path:
    """Write at ``path`` a script that registers COCO-json dataset ``name`` and then runs the
    project's real ``train_net.py`` as ``__main__`` (the CLI as a user runs it, with a test set)."""
    train_net = project_dir / "train_net.py"
    path.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from common.data.datasets import register_coco_instances\n"
        f"register_coco_instances({name!r}, {{}}, {str(json_file)!r}, {str(image_root)!r})\n"
        f"sys.argv[0] = {str(train_net)!r}\n"
        f"runpy.run_path({str(train_net)!r}, run_name='__main__')\n"
    )
    return path


def overfit_opts(name: str, iters: int, output_dir: Path, size: int = 160, max_size: int = 213) -> list:
    """Config overrides of the seeded overfit tests: train and test on dataset ``name`` at
    ``size`` px, batch 4, ``iters`` iterations with a step at 80%, warm-up 10, no workers."""
    return [
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(max_size),
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(max_size),
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},)",
        "SOLVER.WARMUP_ITERS", "10", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0", "OUTPUT_DIR", str(output_dir),
    ]


def cli_train_eval_only_demo(project_dir: Path, cfg_file: Path, tmp_path: Path, bccd_root: Path, name: str,
                             train_opts: list, demo_opts: list, iters: int = 3, n_images: int = 2,
                             demo: bool = True) -> None:
    """The CLI path a user runs, on ``n_images`` real BCCD images registered as ``name``:
    ``train_net.py`` for ``iters`` iterations (checkpoint and COCO results written),
    ``--eval-only`` of its ``model_final.pth`` (the same AP to 1e-4), then ``demo.py`` on one image
    (written at the original size with boxes drawn). ``train_opts`` go to both ``train_net.py``
    runs, ``demo_opts`` to ``demo.py``.

    Raises:
        AssertionError: a script fails, a file is missing, the AP differs or nothing is drawn.
    """
    import cv2
    import numpy as np

    js = bccd_subset_json(bccd_root, tmp_path / f"{name}.json", n_images)
    wrapper = registering_script(project_dir, tmp_path / "train_cli.py", name, js, bccd_root / "images")
    out = tmp_path / "out"
    log = run_script(wrapper, "--config-file", str(cfg_file), *train_opts, "SOLVER.MAX_ITER", str(iters),
                     "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out))
    assert (out / "model_final.pth").is_file() and (out / "inference" / "coco_instances_results.json").is_file()
    log2 = run_script(wrapper, "--config-file", str(cfg_file), "--eval-only", *train_opts,
                      "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    np.testing.assert_allclose(copypaste_metrics(log2), copypaste_metrics(log), atol=1e-4, equal_nan=True)
    if not demo:
        return
    image = sorted((bccd_root / "images").glob("*.jpg"))[0]
    vis = tmp_path / "vis"
    run_script(project_dir / "demo.py", "--config-file", str(cfg_file), "--input", str(image), "--output", str(vis),
               "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
               *demo_opts, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    drawn, original = cv2.imread(str(vis / image.name)), cv2.imread(str(image))
    assert drawn is not None and drawn.shape == original.shape
    assert not np.array_equal(drawn, original)  # labelled boxes were drawn


# The seeded single-process run of the overfit tests: no periodic checkpoint, no workers, SEED 0.
SEEDED_RUN_OPTS = ["SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "0", "SEED", "0"]


def assert_overfits(project_dir: Path, cfg, output_dir: Path, min_ap50: float = 50.0) -> dict:
    """Set :data:`SEEDED_RUN_OPTS` and ``OUTPUT_DIR``, freeze ``cfg``, :func:`train_and_test`, print
    the bbox results and require ``AP50 >= min_ap50``; returns the bbox results.

    Raises:
        AssertionError: AP50 below ``min_ap50`` (the results in the message).
    """
    cfg.merge_from_list(SEEDED_RUN_OPTS + ["OUTPUT_DIR", str(output_dir)])
    cfg.freeze()
    results = train_and_test(project_dir, cfg)
    print("overfit-8 bbox results:", results["bbox"])
    assert results["bbox"]["AP50"] >= min_ap50, results["bbox"]
    return results["bbox"]
