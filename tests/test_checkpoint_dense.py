"""The released FCOS (AdelaiDet, official), VFNet and ATSS checkpoints load by name into the models of
our configs of the same name, with no missing and no unexpected keys.

Each checkpoint is made from the authors' key/shape list (random tensors of exactly those keys and
shapes, in the authors' container: AdelaiDet bare state dict, official FCOS ``{'model'}`` with
``module.`` names, mmcv ``{'meta', 'state_dict'}`` with 0-d scales and ``num_batches_tracked``).
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
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config

REPO = Path(__file__).resolve().parents[1]
STATE_DICTS = REPO.parent / "shared" / "reference" / "state_dicts"
CONFIGS = REPO / "projects" / "FCOS_VFNet" / "configs"

CASES = {
    "fcos.adet.R_50_1x": ("fcos.R_50_1x.yaml", "adet", None),
    "fcos.official.imprv_R_50_1x": ("fcos.imprv_R_50_1x.yaml", "official", "maskrcnn-benchmark FCOS"),
    "vfnet.r50_fpn_1x": ("vfnet.r50_fpn_1x.yaml", "mmdet", "mmdetection"),
    "vfnet.r50_dcn_ms_2x": ("vfnet.r50_dcn_ms_2x.yaml", "mmdet", "mmdetection"),
    "atss.r50_fpn_1x": ("atss.r50_fpn_1x.yaml", "mmdet", "mmdetection"),
}

# Input convention each checkpoint expects (format, mean, std, stride in 1x1).
CONVENTIONS = {
    "adet": ("BGR", [103.53, 116.28, 123.675], [1.0, 1.0, 1.0], True),
    "official": ("BGR", [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0], True),
    "mmdet": ("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], False),
}


def _authors_checkpoint(name: str, kind: str, path: Path) -> dict:
    json_file = STATE_DICTS / f"{name}.json"
    if not json_file.is_file():
        pytest.skip(f"{json_file} is not available")
    shapes = json.loads(json_file.read_text())
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.int64)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.01
    if kind == "adet":
        obj = sd
    elif kind == "official":
        obj = {"model": sd, "iteration": 90000}
    else:
        obj = {"meta": {"mmdet_version": "2.10.0", "epoch": 12, "CLASSES": ("person", "bicycle")}, "state_dict": sd}
    torch.save(obj, path)
    return sd


def _cfg(config: str):
    cfg = get_cfg()
    add_fcos_vfnet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return cfg


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_checkpoint_loads_exactly(name, tmp_path, caplog):
    config, kind, fmt = CASES[name]
    path = tmp_path / f"{name}.pth"
    theirs = _authors_checkpoint(name, kind, path)
    cfg = _cfg(config)
    fmt_in, mean, std, stride_in_1x1 = CONVENTIONS[kind]
    assert (cfg.INPUT.FORMAT, cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (fmt_in, stride_in_1x1)
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(mean) and list(cfg.MODEL.PIXEL_STD) == pytest.approx(std)
    model = build_model(cfg)
    ours = model.state_dict()
    checkpointer = DetectionCheckpointer(model)
    with caplog.at_level(logging.INFO):
        loaded = checkpointer._load_file(str(path))
        incompatible = checkpointer._load_model(loaded)
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    assert list(incompatible.incorrect_shapes) == []
    if fmt is None:
        assert "__format__" not in loaded  # AdelaiDet's keys are ours: read as a detectron2 file
        assert set(theirs) == set(ours)
    else:
        assert fmt in loaded["__format__"] and "Recognised" in caplog.text
    assert len(ours) == len([k for k in theirs if not k.endswith("num_batches_tracked")])

    state = model.state_dict()
    if kind == "official":
        src = theirs["module.backbone.body.layer1.0.bn2.running_var"]
        assert torch.allclose(state["backbone.bottom_up.res2.0.conv2.norm.running_var"], src - 1e-5)
        assert torch.equal(state["proposal_generator.fcos_head.ctrness.weight"], theirs["module.rpn.head.centerness.weight"])
        assert torch.equal(state["backbone.fpn_lateral3.weight"], theirs["module.backbone.fpn.fpn_inner2.weight"])
    if kind == "mmdet":
        assert state["head.scales.2.scale"].shape == (1,)
        assert float(state["head.scales.2.scale"]) == float(theirs["bbox_head.scales.2.scale"])
        assert torch.equal(state["head.cls_subnet.3.weight"], theirs["bbox_head.cls_convs.1.conv.weight"])
        assert torch.equal(state["head.bbox_subnet.4.bias"], theirs["bbox_head.reg_convs.1.gn.bias"])
        assert torch.equal(state["backbone.top_block.p7.weight"], theirs["neck.fpn_convs.4.conv.weight"])
        assert torch.equal(state["backbone.bottom_up.res4.2.conv3.norm.weight"], theirs["backbone.layer3.2.bn3.weight"])
    if name == "vfnet.r50_dcn_ms_2x":
        assert torch.equal(state["backbone.bottom_up.res3.0.conv2_offset.weight"],
                           theirs["backbone.layer2.0.conv2.conv_offset.weight"])
        assert torch.equal(state["head.cls_subnet.6.conv_offset.bias"], theirs["bbox_head.cls_convs.2.conv.conv_offset.bias"])
        assert torch.equal(state["head.reg_refine_dconv.weight"], theirs["bbox_head.vfnet_reg_refine_dconv.weight"])


def test_checkpoint_of_other_config_fails_loudly(tmp_path):
    # An ATSS file into the VFNet model: recognised as mmdet, but the strict load names what is off.
    path = tmp_path / "atss.pth"
    _authors_checkpoint("atss.r50_fpn_1x", "mmdet", path)
    model = build_model(_cfg("vfnet.r50_fpn_1x.yaml"))
    with pytest.raises(ValueError, match="does not fit"):
        DetectionCheckpointer(model).load(str(path))
