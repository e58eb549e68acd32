"""The authors' CornerNet / CornerNet-Lite / CenterNet-Triplets checkpoints load by ``MODEL.WEIGHTS``
into the models of our configs of the same name.

Key/shape level, all five layouts (``../shared/reference/state_dicts/*.json``, skipped when absent):
the renamed key set equals the model's (built on the meta device, no allocation) with equal
shapes, ``num_batches_tracked`` optional. Real loads through ``DetectionCheckpointer`` (a bare
``module.`` state dict of random tensors of exactly the JSON's keys and shapes, legacy torch
serialisation, ``.pkl`` name as the authors'): CornerNet-Squeeze with and without
``num_batches_tracked``, and CenterNet-52.
"""
import json
import math
from pathlib import Path

import pytest
import torch

from common.checkpoint import DetectionCheckpointer
from common.checkpoint.formats import recognize_checkpoint
from common.checkpoint.formats.cornernet import convert_cornernet_state_dict
from common.config import get_cfg
from common.modeling import META_ARCH_REGISTRY, build_model
from projects.CornerNet.cornernet import add_cornernet_config

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DICTS = REPO_ROOT.parent / "shared" / "reference" / "state_dicts"
CONFIGS = REPO_ROOT / "projects" / "CornerNet" / "configs"

# reference json -> our config
LAYOUTS = {
    "cornernet.hg104": "cornernet.hg104.yaml",
    "cornernet.hg104.lite": "cornernet.hg104.yaml",
    "cornernet_squeeze": "cornernet_squeeze.yaml",
    "centernet_triplets.hg52": "centernet_triplets.hg52.yaml",
    "centernet_triplets.hg104": "centernet_triplets.hg104.yaml",
    "cornernet_saccade.hg54": "cornernet_saccade.hg54.yaml",
}


def _layout(name):
    path = STATE_DICTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"../shared/reference/state_dicts/{path.name} is not available")
    return json.loads(path.read_text())


def _cfg(config):
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def _meta_shapes(config):
    cfg = _cfg(config)
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_renamed_keys_and_shapes_equal_our_model(name):
    layout = _layout(name)
    ours = _meta_shapes(LAYOUTS[name])
    theirs = {k[len("module."):]: v for k, v in layout.items()}
    renamed = convert_cornernet_state_dict(theirs)
    assert set(renamed) == set(ours)
    assert {k: v for k, v in ours.items() if renamed[k] != v} == {}
    # The authors' file without num_batches_tracked (CornerNet's 0.4.0 release) renames to ours minus those.
    no_nbt = convert_cornernet_state_dict({k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")})
    assert set(no_nbt) == {k for k in ours if not k.endswith("num_batches_tracked")}
    params = sum(math.prod(s) for k, s in ours.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert params == {"cornernet.hg104": 201_035_212, "cornernet.hg104.lite": 201_035_212,
                      "cornernet_squeeze": 31_771_852, "centernet_triplets.hg52": 104_844_152,
                      "centernet_triplets.hg104": 210_062_960, "cornernet_saccade.hg54": 116_969_339}[name]


def test_both_cornernet_layouts_are_recognised_and_rename_alike():
    cn, cnl = _layout("cornernet.hg104"), _layout("cornernet.hg104.lite")
    fake = lambda layout: {k: torch.zeros(0) for k in layout}  # noqa: E731
    (f1, a), (f2, b) = recognize_checkpoint(fake(cn), {}), recognize_checkpoint(fake(cnl), {})
    assert type(f1).__name__ == type(f2).__name__ == "CornerNetFormat"
    assert set(a["model"]) == set(b["model"])
    assert "backbone.kps.1.low2.low2.low2.low2.low2.3.conv2.weight" in a["model"]
    assert "heads.br_offs.0.1.weight" in b["model"] and "heads.tl_pools.1.p_conv1.weight" in b["model"]


def _random_state_dict(layout, seed=0, nbt=True):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            if nbt:
                out[k] = torch.tensor(7, dtype=torch.long)
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


def _load_and_check(model, theirs, path, pairs, caplog):
    torch.save(theirs, path, _use_new_zipfile_serialization=False)  # legacy format, as torch 0.4-1.0
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.zero_()
    with caplog.at_level("INFO"):
        DetectionCheckpointer(model).load(str(path))
    path.unlink()
    assert "Recognised princeton-vl/CornerNet" in caplog.text
    ours = model.state_dict()
    for their_key, our_key in pairs.items():
        torch.testing.assert_close(ours[our_key], theirs[their_key], rtol=0, atol=0)
    zero = [k for k, v in ours.items() if v.is_floating_point() and not v.abs().sum() > 0]
    assert zero == []


def test_squeeze_checkpoint_loads_with_and_without_num_batches_tracked(tmp_path, caplog):
    layout = _layout("cornernet_squeeze")
    model = build_model(_cfg("cornernet_squeeze.yaml"))
    pairs = {
        "module.hg.pre.2.conv1.weight": "backbone.pre.2.conv1.weight",
        "module.hg.hgs.0.up1.0.conv_3x3.weight": "backbone.kps.0.up1.0.conv_3x3.weight",
        "module.hg.hgs.1.low2.low2.low2.up2.weight": "backbone.kps.1.low2.low2.low2.up2.weight",
        "module.hg.inters_.0.1.running_var": "backbone.inters_.0.1.running_var",
        "module.tl_modules.1.p_conv1.weight": "heads.tl_pools.1.p_conv1.weight",
        "module.br_heats.0.0.conv.weight": "heads.br_heats.0.0.conv.weight",
        "module.tl_offs.1.1.bias": "heads.tl_offs.1.1.bias",
    }
    _load_and_check(model, _random_state_dict(layout), tmp_path / "CornerNet_Squeeze_500000.pkl", pairs, caplog)
    assert int(model.state_dict()["backbone.pre.0.bn.num_batches_tracked"]) == 7
    caplog.clear()
    _load_and_check(model, _random_state_dict(layout, seed=1, nbt=False), tmp_path / "squeeze_nonbt.pkl", pairs, caplog)
    assert "num_batches_tracked absent" in caplog.text


def test_centernet52_checkpoint_loads(tmp_path, caplog):
    layout = _layout("centernet_triplets.hg52")
    model = build_model(_cfg("centernet_triplets.hg52.yaml"))
    pairs = {
        "module.kps.0.low2.low2.low2.low2.low2.3.conv2.weight": "backbone.kps.0.low2.low2.low2.low2.low2.3.conv2.weight",
        "module.tl_cnvs.0.look_conv1.conv.weight": "heads.tl_pools.0.look_conv1.conv.weight",
        "module.br_cnvs.0.P2_look_conv.weight": "heads.br_pools.0.P2_look_conv.weight",
        "module.ct_cnvs.0.p_bn1.running_mean": "heads.ct_pools.0.p_bn1.running_mean",
        "module.ct_heats.0.1.bias": "heads.ct_heats.0.1.bias",
        "module.ct_regrs.0.1.weight": "heads.ct_offs.0.1.weight",
        "module.tl_tags.0.0.conv.bias": "heads.tl_tags.0.0.conv.bias",
    }
    _load_and_check(model, _random_state_dict(layout), tmp_path / "CenterNet-52_480000.pkl", pairs, caplog)


def test_wrong_model_raises(tmp_path):
    squeeze = _random_state_dict(_layout("cornernet_squeeze"))
    model = build_model(_cfg("centernet_triplets.hg52.yaml"))
    torch.save(squeeze, tmp_path / "sq.pkl")
    with pytest.raises(ValueError, match="recognised as princeton-vl/CornerNet"):
        DetectionCheckpointer(model).load(str(tmp_path / "sq.pkl"))


def test_saccade_checkpoint_loads_into_cornernet_saccade_only(tmp_path, caplog):
    # CornerNet_Saccade_500000.pkl: bare module. state dict, legacy serialisation, CornerNet-Lite
    # names plus att_modules; 116,969,339 parameters (also checked at key level above).
    layout = _layout("cornernet_saccade.hg54")
    model = build_model(_cfg("cornernet_saccade.hg54.yaml"))
    assert sum(p.numel() for p in model.parameters()) == 116_969_339
    pairs = {
        "module.hg.hgs.2.low2.low2.low2.0.conv1.weight": "backbone.kps.2.low2.low2.low2.0.conv1.weight",
        "module.hg.hgs.0.low1.0.conv1.weight": "backbone.kps.0.low1.0.conv1.weight",
        "module.att_modules.1.2.0.conv.weight": "attention_heads.1.2.0.conv.weight",
        "module.att_modules.2.0.1.bias": "attention_heads.2.0.1.bias",
        "module.tl_modules.2.p_conv1.weight": "heads.tl_pools.2.p_conv1.weight",
        "module.br_offs.1.1.weight": "heads.br_offs.1.1.weight",
    }
    theirs = _random_state_dict(layout)
    _load_and_check(model, theirs, tmp_path / "CornerNet_Saccade_500000.pkl", pairs, caplog)
    assert "CornerNet-Saccade" in caplog.text
    # the same file into a model without attention heads: the strict format refuses it
    torch.save(theirs, tmp_path / "saccade.pkl", _use_new_zipfile_serialization=False)
    del theirs, model
    plain = build_model(_cfg("cornernet.bccd.yaml"))
    with pytest.raises(ValueError, match="recognised as princeton-vl/CornerNet"):
        DetectionCheckpointer(plain).load(str(tmp_path / "saccade.pkl"))


@pytest.mark.parametrize("name", ["cornernet.hg104", "cornernet.hg104.lite"])
def test_cornernet104_releases_load_in_both_layouts(name, cornernet104, tmp_path, caplog):
    # The released CornerNet_500000.pkl files (both repositories) have no num_batches_tracked.
    layout = _layout(name)
    theirs = _random_state_dict(layout, nbt=False)
    p = "module.hg.hgs." if name.endswith("lite") else "module.kps."
    regr = "module.br_offs" if name.endswith("lite") else "module.br_regrs"
    pairs = {p + "1.low2.low2.low2.low2.low2.3.conv2.weight": "backbone.kps.1.low2.low2.low2.low2.low2.3.conv2.weight",
             regr + ".0.1.weight": "heads.br_offs.0.1.weight", "module.tl_heats.1.1.bias": "heads.tl_heats.1.1.bias"}
    _load_and_check(cornernet104, theirs, tmp_path / "CornerNet_500000.pkl", pairs, caplog)


@pytest.fixture(scope="module")
def cornernet104():
    """Hourglass-104 CornerNet (201M parameters), built once for the module."""
    yield build_model(_cfg("cornernet.hg104.yaml"))
