"""tools/convert-torchvision-to-d2.py: a real torchvision ResNet-18 loads into our backbone."""
import importlib.util
from pathlib import Path

import torch
import torchvision

from common.checkpoint import DetectionCheckpointer
from common.config import get_cfg
from common.modeling import build_backbone

TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert-torchvision-to-d2.py"


def _tool():
    spec = importlib.util.spec_from_file_location("convert_tv_d2", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torchvision_resnet18_converts_and_loads_without_missing_keys(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    converted = _tool().convert(str(tmp_path / "resnet18.pth"), str(tmp_path / "R-18.pkl"))
    assert "res2.0.conv1.norm.running_mean" in converted and "stem.conv1.weight" in converted
    assert "res3.0.shortcut.norm.weight" in converted

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "MODEL.RESNETS.DEPTH", "18",
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                         "MODEL.RESNETS.OUT_FEATURES", "['res2','res3','res4','res5']",
                         "MODEL.FPN.IN_FEATURES", "['res2','res3','res4','res5']"])
    model = torch.nn.Module()
    model.backbone = build_backbone(cfg)
    incompat = DetectionCheckpointer(model)._load_model(
        DetectionCheckpointer(model)._load_file(str(tmp_path / "R-18.pkl"))
    )
    missing = [k for k in incompat.missing_keys if "bottom_up" in k]
    assert missing == [], missing
    # The values really arrived (FrozenBN buffers included).
    ours = model.backbone.bottom_up
    assert torch.equal(ours.res4[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert torch.equal(ours.stem.conv1.norm.running_var, tv.bn1.running_var)
