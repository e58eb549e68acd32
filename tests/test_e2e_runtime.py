"""The runtime as users run it from the command line (real BCCD images, the real scripts):
``--num-gpus 2`` with DataLoader workers and the device only in the YAML, a failing worker, a
user's COCO-json dataset declared only on the command line, and kill -9 + ``--resume``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from e2e_helpers import bccd_subset_json, copypaste_metrics, run_script

REPO = Path(__file__).resolve().parents[1]
ONENET = REPO / "projects" / "OneNet"
CFG = ONENET / "configs" / "onenet.bccd.res18.yaml"  # MODEL.DEVICE "cpu" and NUM_WORKERS 2 in the YAML
TINY = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
]


def _cells_dataset(bccd_root: Path, tmp_path: Path, n: int = 6) -> tuple[str, str]:
    """A user's dataset: 6 BCCD images, only red and white cells, under other class names."""
    full = json.loads(bccd_subset_json(bccd_root, tmp_path / "sub.json", n).read_text())
    keep = {c["id"]: c for c in full["categories"] if c["name"] in ("RBC", "WBC")}
    cats = [{"id": cid, "name": {"RBC": "red cell", "WBC": "white cell"}[c["name"]]} for cid, c in keep.items()]
    anns = [a for a in full["annotations"] if a["category_id"] in keep]
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(dict(full, categories=cats, annotations=anns)))
    return str(path), str(bccd_root / "images")


def test_two_processes_with_workers_and_device_from_the_yaml(tmp_path):
    # No MODEL.DEVICE on the command line: gloo is chosen from the YAML; 2 spawned workers per rank.
    out = tmp_path / "out"
    log = run_script(ONENET / "train_net.py", "--config-file", str(CFG), "--num-gpus", "2", "--dist-url", "auto",
                     *TINY, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out), timeout=240)
    assert "World size: 2" in log and (out / "model_final.pth").is_file()
    assert (out / "log.txt.rank1").is_file()


def test_a_failing_worker_stops_the_run_with_its_error(tmp_path, bccd_root):
    json_file, _ = _cells_dataset(bccd_root, tmp_path)
    empty_root = tmp_path / "no_images"
    empty_root.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ONENET / "train_net.py"), "--config-file", str(CFG), "--num-gpus", "2",
         "--dist-url", "auto", *TINY, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()",
         "DATASETS.COCO_JSON", str((("cells", json_file, str(empty_root)),)), "DATASETS.TRAIN", "('cells',)",
         "MODEL.NUM_CLASSES_FROM_DATASET", "True", "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no_images" in out and ("FileNotFoundError" in out or "No such file" in out), out[-3000:]


def test_user_dataset_from_the_command_line_then_eval_only_and_demo(tmp_path, bccd_root):
    json_file, image_root = _cells_dataset(bccd_root, tmp_path)
    declare = ["DATASETS.COCO_JSON", str((("cells", json_file, image_root),)),
               "DATASETS.TRAIN", "('cells',)", "DATASETS.TEST", "('cells',)"]
    out = tmp_path / "train"
    log = run_script(ONENET / "train_net.py", "--config-file", str(CFG), *TINY, *declare,
                     "MODEL.NUM_CLASSES_FROM_DATASET", "True", "DATALOADER.NUM_WORKERS", "0",
                     "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out))
    assert "MODEL.OneNet.NUM_CLASSES = 2 taken from dataset 'cells'" in log
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["metadata"]["thing_classes"] == ["red cell", "white cell"]
    assert ckpt["model"]["head.cls_score.bias"].shape == (2,) if "head.cls_score.bias" in ckpt["model"] else True

    # The YAML says 3 classes; nothing on the command line says 2: it comes from the checkpoint.
    log2 = run_script(ONENET / "train_net.py", "--config-file", str(CFG), "--eval-only", *TINY, *declare,
                      "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    assert "MODEL.OneNet.NUM_CLASSES = 2 taken from the checkpoint" in log2
    assert copypaste_metrics(log2) == pytest.approx(copypaste_metrics(log), abs=1e-4, nan_ok=True)

    vis = tmp_path / "vis"
    log3 = run_script(ONENET / "demo.py", "--config-file", str(CFG), "--input", str(Path(image_root) / "BloodImage_00000.jpg"),
                      "--output", str(vis), "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS",
                      str(out / "model_final.pth"), "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128")
    assert "Class names (checkpoint:model_final.pth): red cell, white cell" in log3
    assert (vis / "BloodImage_00000.jpg").is_file()


def _final_weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path):
    args = [sys.executable, str(ONENET / "train_net.py"), "--config-file", str(CFG), *TINY,
            "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "SEED", "7"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = tmp_path / "ref"
    subprocess.run(args + ["OUTPUT_DIR", str(ref)], cwd=REPO, env=env, check=True, capture_output=True, timeout=300)

    run = tmp_path / "run"
    proc = subprocess.Popen(args + ["OUTPUT_DIR", str(run)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (run / "model_0000003.pth").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its DataLoader workers
    proc.wait()
    assert not (run / "model_final.pth").exists(), "killed too late"
    log = run_script(ONENET / "train_net.py", "--config-file", str(CFG), "--resume", *TINY, "SOLVER.MAX_ITER", "8",
                     "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "SEED", "7", "OUTPUT_DIR", str(run))
    assert "Resuming from iteration" in log
    a, b = _final_weights(ref / "model_final.pth"), _final_weights(run / "model_final.pth")
    assert a.keys() == b.keys()
    max_diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].numel())
    print("kill -9 + --resume vs uninterrupted: max abs weight difference", max_diff)
    assert max_diff <= 1e-6
