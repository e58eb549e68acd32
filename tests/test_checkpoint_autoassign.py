"""The released AutoAssign_Res50_FPN_1x (cvpods) loads as it is into the model of
``autoassign.r50_fpn_1x.yaml``: no missing, no unexpected key, no shape difference, the same
parameter count as the authors' model.

The checkpoint is made from the authors' key/shape list (random tensors of exactly those keys and
shapes, ``mu`` and ``sigma`` first) in the cvpods trainer's container ``{'model', 'optimizer',
'scheduler', 'iteration'}``; cvpods' keys are detectron2's, so no checkpoint format is involved.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from common.checkpoint import DetectionCheckpointer
from common.config import get_cfg
from common.modeling import build_model
from projects.AutoAssign.autoassign import add_autoassign_config

REPO = Path(__file__).resolve().parents[1]
JSON = REPO.parent / "shared" / "reference" / "state_dicts" / "autoassign.r50_fpn_1x.json"
CONFIG = REPO / "projects" / "AutoAssign" / "configs" / "autoassign.r50_fpn_1x.yaml"

# Authors' model (dense_checkpoints §8): 326 state-dict tensors / 36,479,578 values,
# 114 parameters / 36,373,338 values (212 FrozenBN buffers).
REF_PARAMS = (114, 36_373_338)


def _cvpods_checkpoint(path: Path) -> dict:
    if not JSON.is_file():
        pytest.skip(f"{JSON} is not available")
    shapes = json.loads(JSON.read_text())
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.rand(s, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(s, generator=g) * 0.01)
          for k, s in shapes.items()}
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(80, 2)}}, "param_groups": [{"lr": 0.0001, "params": [0]}]}
    torch.save({"model": sd, "optimizer": optimizer, "scheduler": {"last_epoch": 90000}, "iteration": 89999}, path)
    return sd


def _model(**opts):
    cfg = get_cfg()
    add_autoassign_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    for k, v in opts.items():
        cfg.merge_from_list([k, v])
    return build_model(cfg)


def test_released_checkpoint_loads_exactly(tmp_path, caplog):
    path = tmp_path / "AutoAssign_Res50_FPN_1x.pth"
    theirs = _cvpods_checkpoint(path)
    model = _model()
    ours = model.state_dict()
    assert list(ours) == list(theirs)  # same keys in the same order: mu, sigma, backbone.fpn_*, ...
    assert all(list(ours[k].shape) == list(v.shape) for k, v in theirs.items())
    params = list(model.parameters())
    assert (len(params), sum(p.numel() for p in params)) == REF_PARAMS
    assert sum(v.numel() for v in ours.values()) == 36_479_578

    checkpointer = DetectionCheckpointer(model)
    with caplog.at_level(logging.INFO):
        loaded = checkpointer._load_file(str(path))
        incompatible = checkpointer._load_model(loaded)
    assert "__format__" not in loaded  # cvpods' names are ours: read as a detectron2 file
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    assert list(incompatible.incorrect_shapes) == []
    state = model.state_dict()
    for key in ("mu", "sigma", "backbone.top_block.p6.weight", "head.obj_score.weight", "head.scales.4.scale",
                "backbone.bottom_up.res5.2.conv3.norm.running_var"):
        assert torch.equal(state[key], theirs[key]), key


def test_released_checkpoint_through_load(tmp_path):
    # The public path (MODEL.WEIGHTS): extra cvpods entries (optimizer, scheduler) are not applied.
    path = tmp_path / "aa.pth"
    theirs = _cvpods_checkpoint(path)
    model = _model()
    DetectionCheckpointer(model).load(str(path))
    assert torch.equal(model.mu, theirs["mu"]) and torch.equal(model.head.cls_score.bias, theirs["head.cls_score.bias"])


def test_p6_from_p5_model_names_the_skipped_p6(tmp_path, caplog):
    # Megvii-BaseDetection/AutoAssign#2: cvpods after Feb. 2021 builds P6 from P5 and silently drops
    # the released (256, 2048, 3, 3) p6 (AP ~29). Our P5 variant loads with detectron2's warning.
    path = tmp_path / "aa.pth"
    _cvpods_checkpoint(path)
    model = _model(**{"MODEL.FPN.TOP_BLOCK_IN_FEATURE": "p5"})
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(str(path))
    assert "backbone.top_block.p6.weight" in caplog.text and "(256, 2048, 3, 3)" in caplog.text
