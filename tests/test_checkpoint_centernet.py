"""The authors' CenterNet checkpoints (xingyizhou/CenterNet ``save_model`` layout) load by
``MODEL.WEIGHTS`` into the models of our ``ctdet_coco_*`` configs.

Each checkpoint is made from the key/shape list of the authors' model (``../shared/reference/
state_dicts/centernet.ctdet_coco_*.json``, skipped when absent) filled with random values, saved
in the authors' container ``{"epoch", "state_dict"}`` (with/without ``module.``, legacy non-zip
serialisation), and must load with no missing/unexpected key and every value where it belongs.
"""
import json
from pathlib import Path

import pytest
import torch

from common.checkpoint import DetectionCheckpointer
from common.checkpoint.formats import recognize_checkpoint
from common.config import get_cfg
from common.modeling import build_model
from projects.CenterNet.centernet import add_centernet_config

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DICTS = REPO_ROOT.parent / "shared" / "reference" / "state_dicts"
CONFIGS = REPO_ROOT / "projects" / "CenterNet" / "configs"

# json name -> (our config, {their key: our key} checked by value).
LAYOUTS = {
    "res18": ("ctdet_coco_res18.yaml", {
        "conv1.weight": "backbone.body.stem.conv1.weight",
        "bn1.running_var": "backbone.body.stem.conv1.norm.running_var",
        "layer2.0.downsample.0.weight": "backbone.body.res3.0.shortcut.weight",
        "layer4.1.bn2.bias": "backbone.body.res5.1.conv2.norm.bias",
        "deconv_layers.3.weight": "backbone.deconv.1.up_sample.weight",
        "deconv_layers.7.running_mean": "backbone.deconv.2.up_bn.running_mean",
        "hm.2.bias": "heads.0.hm.2.bias",
        "wh.0.weight": "heads.0.wh.0.weight",
        "reg.2.weight": "heads.0.reg.2.weight",
    }),
    "resdcn18": ("ctdet_coco_resdcn18.yaml", {
        "deconv_layers.0.weight": "backbone.deconv.0.dcn.dcn.weight",
        "deconv_layers.6.bias": "backbone.deconv.1.dcn.dcn.bias",
        "deconv_layers.12.conv_offset_mask.weight": "backbone.deconv.2.dcn.conv_offset.weight",
        "deconv_layers.1.weight": "backbone.deconv.0.dcn_bn.weight",
        "deconv_layers.9.weight": "backbone.deconv.1.up_sample.weight",
        "deconv_layers.16.running_var": "backbone.deconv.2.up_bn.running_var",
        "wh.2.bias": "heads.0.wh.2.bias",
        "reg.0.bias": "heads.0.reg.0.bias",
    }),
    "resdcn101": ("ctdet_coco_resdcn101.yaml", {
        "layer3.22.conv3.weight": "backbone.body.res4.22.conv3.weight",
        "layer1.0.downsample.1.running_mean": "backbone.body.res2.0.shortcut.norm.running_mean",
        "deconv_layers.0.conv_offset_mask.bias": "backbone.deconv.0.dcn.conv_offset.bias",
        "hm.0.weight": "heads.0.hm.0.weight",
    }),
    "dla": ("ctdet_coco_dla_1x.yaml", {
        "base.base_layer.0.weight": "backbone.base.base_layer.0.weight",
        "base.level3.tree2.root.conv.weight": "backbone.base.level3.tree2.root.conv.weight",
        "dla_up.ida_2.proj_3.conv.weight": "backbone.dla_up.ida_2.proj_3.conv.dcn.weight",
        "dla_up.ida_1.node_2.conv.conv_offset_mask.weight": "backbone.dla_up.ida_1.node_2.conv.conv_offset.weight",
        "ida_up.up_2.weight": "backbone.ida_up.up_2.weight",
        "ida_up.node_1.conv.bias": "backbone.ida_up.node_1.conv.dcn.bias",
        "hm.2.bias": "heads.0.hm.2.bias",
        "reg.0.weight": "heads.0.reg.0.weight",
    }),
    "hg": ("ctdet_coco_hg.yaml", {
        "pre.0.conv.weight": "backbone.pre.0.conv.weight",
        "kps.1.low2.low2.low2.low2.low2.3.conv2.weight": "backbone.kps.1.low2.low2.low2.low2.low2.3.conv2.weight",
        "inters_.0.1.running_var": "backbone.inters_.0.1.running_var",
        "hm.0.0.conv.weight": "heads.0.hm.0.weight",
        "hm.1.1.bias": "heads.1.hm.2.bias",
        "wh.1.0.conv.bias": "heads.1.wh.0.bias",
        "reg.0.1.weight": "heads.0.reg.2.weight",
    }),
}
# (module. prefix, legacy serialisation) written per layout; the big models get one file each.
VARIANTS = {
    "res18": [(False, False), (True, False), (True, True)],
    "resdcn18": [(False, False), (True, True)],
    "resdcn101": [(True, True)],
    "dla": [(False, True), (True, False)],
    "hg": [(True, True)],
}


def _layout(name):
    path = STATE_DICTS / f"centernet.ctdet_coco_{name}.json"
    if not path.is_file():
        pytest.skip(f"../shared/reference/state_dicts/{path.name} is not available")
    return json.loads(path.read_text())


def _random_state_dict(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


def _model(config):
    cfg = get_cfg()
    add_centernet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return build_model(cfg)


@pytest.fixture(scope="module")
def models():
    """Models built once per module (the Hourglass-104 and ResNet-101 take a few seconds)."""
    cache = {}

    def get(config):
        if config not in cache:
            cache[config] = _model(config)
        return cache[config]

    yield get
    cache.clear()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_authors_checkpoint_loads_completely(name, models, tmp_path, caplog):
    layout = _layout(name)
    config, pairs = LAYOUTS[name]
    model = models(config)
    theirs = _random_state_dict(layout)
    for prefixed, legacy in VARIANTS[name]:
        sd = {("module." + k if prefixed else k): v for k, v in theirs.items()}
        path = tmp_path / f"model_{int(prefixed)}{int(legacy)}.pth"
        torch.save({"epoch": 140, "state_dict": sd}, path, _use_new_zipfile_serialization=not legacy)
        del sd
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point() and k not in ("pixel_mean", "pixel_std"):
                    v.zero_()
        with caplog.at_level("INFO"):
            extra = DetectionCheckpointer(model).load(str(path))
        path.unlink()
        assert extra.get("epoch") == 140
        assert "Recognised xingyizhou/CenterNet" in caplog.text
        ours = model.state_dict()
        for their_key, our_key in pairs.items():
            torch.testing.assert_close(ours[our_key], theirs[their_key], rtol=0, atol=0)
        # Every float tensor of the model came from the file (none left at zero).
        zero = [k for k, v in ours.items() if v.is_floating_point() and k not in ("pixel_mean", "pixel_std")
                and not v.abs().sum() > 0]
        assert zero == []
        if name == "dla":
            assert "base.fc.bias" in caplog.text  # the dropped classifier is named in the log
        caplog.clear()


def test_bare_state_dict_is_not_taken_for_a_torchvision_resnet():
    layout = _layout("res18")
    sd = {k: torch.zeros(1) for k in layout}
    fmt, converted = recognize_checkpoint(sd, {})
    assert type(fmt).__name__ == "CenterNetFormat"
    assert "backbone.deconv.0.up_sample.weight" in converted["model"]


def test_partial_load_of_a_recognised_file_raises(models, tmp_path):
    theirs = _random_state_dict(_layout("resdcn18"))
    model = models("ctdet_coco_res18.yaml")  # plain res18: no DCN, 256-channel deconvs
    torch.save({"epoch": 1, "state_dict": theirs}, tmp_path / "resdcn18.pth")
    with pytest.raises(ValueError, match="recognised as xingyizhou/CenterNet"):
        DetectionCheckpointer(model).load(str(tmp_path / "resdcn18.pth"))
    theirs = _random_state_dict(_layout("res18"))
    del theirs["wh.2.bias"]
    torch.save(theirs, tmp_path / "res18_missing.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \['heads.0.wh.2.bias'\]"):
        DetectionCheckpointer(model).load(str(tmp_path / "res18_missing.pth"))
