"""Tests for common.modeling: ResNet/FPN backbones, builders, state-dict layout, ROIPooler, postprocessing."""
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from common.config import get_cfg
from common.layers import DeformConv, FrozenBatchNorm2d, ModulatedDeformConv, ShapeSpec
from common.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    FPN,
    Backbone,
    BasicStem,
    DeformBottleneckBlock,
    ResNet,
    build_backbone,
    build_model,
    detector_postprocess,
)
from common.modeling.poolers import ROIPooler, assign_boxes_to_levels
from common.structures import Boxes, Instances

STATE_DICTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "state_dicts"


def _cfg(depth=50, out=("res2", "res3", "res4", "res5"), norm="FrozenBN", freeze_at=2, name="build_resnet_backbone"):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = list(out)
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


# ---------------------------------------------------------------- ResNet
@pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])])
def test_resnet_output_shapes_and_strides(depth, channels):
    torch.manual_seed(0)
    model = build_backbone(_cfg(depth)).eval()
    shapes = model.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == channels
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for (name, feat), c, side in zip(out.items(), channels, [16, 8, 4, 2]):
        assert feat.shape == (1, c, side, side), name
    assert model.size_divisibility == 0


def test_resnet_builds_only_needed_stages():
    model = build_backbone(_cfg(18, out=["res3"], freeze_at=0))
    names = [n for n, _ in model.named_children()]
    assert names == ["stem", "res2", "res3"]
    assert list(model(torch.randn(1, 3, 32, 32))) == ["res3"]
    gray = build_backbone(_cfg(18, out=["stem"], freeze_at=0), ShapeSpec(channels=1))
    assert gray.stem.conv1.weight.shape == (64, 1, 7, 7)
    stem_only = ResNet(BasicStem(), ResNet.make_default_stages(18), out_features=["stem"])
    assert [n for n, _ in stem_only.named_children()] == ["stem"]
    with pytest.raises(ValueError, match="out_features"):
        ResNet(BasicStem(), ResNet.make_default_stages(18), out_features=["res6"])


def test_freeze_at():
    model = build_backbone(_cfg(18, norm="BN", freeze_at=2))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in grads.items() if n.startswith(("stem.", "res2.")))
    assert all(v for n, v in grads.items() if n.startswith(("res3.", "res4.", "res5.")))
    # frozen stages carry FrozenBN, trainable ones keep BatchNorm
    assert isinstance(model.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.res2[1].conv2.norm, FrozenBatchNorm2d)
    assert isinstance(model.res3[0].conv1.norm, nn.BatchNorm2d)
    model0 = build_backbone(_cfg(18, norm="BN", freeze_at=0))
    assert all(p.requires_grad for p in model0.parameters())
    assert isinstance(model0.stem.conv1.norm, nn.BatchNorm2d)


def test_build_resnet_errors():
    cfg = _cfg(18)
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        build_backbone(cfg)
    cfg = _cfg(50)
    cfg.MODEL.RESNETS.DEPTH = 42
    with pytest.raises(ValueError, match="DEPTH"):
        build_backbone(cfg)


def test_stride_in_1x1_and_dilation():
    cfg = _cfg(50, out=["res5"], freeze_at=0)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    with torch.device("meta"):
        m = build_backbone(cfg)
    assert m.res3[0].conv1.stride == (2, 2) and m.res3[0].conv2.stride == (1, 1)
    assert m.res5[0].conv2.dilation == (2, 2) and m.res5[0].conv2.padding == (2, 2)
    assert m.output_shape()["res5"].stride == 16


@pytest.mark.parametrize("modulated,op", [(False, DeformConv), (True, ModulatedDeformConv)])
def test_deform_bottleneck(modulated, op):
    cfg = _cfg(50, out=["res3"], freeze_at=0)
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, False, False]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    torch.manual_seed(0)
    m = build_backbone(cfg).eval()
    block = m.res3[0]
    assert isinstance(block, DeformBottleneckBlock) and isinstance(block.conv2, op)
    keys = [k for k in block.state_dict() if not k.split(".")[0] in ("shortcut",)]
    assert keys[:7] == ["conv1.weight"] + [f"conv1.norm.{s}" for s in ("weight", "bias", "running_mean", "running_var")] + [
        "conv2_offset.weight", "conv2_offset.bias"]
    assert block.conv2_offset.weight.shape[0] == (27 if modulated else 18)
    assert block.conv2_offset.weight.abs().sum() == 0  # zero init: starts as a plain conv
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32))["res3"].shape == (1, 512, 4, 4)


# ---------------------------------------------------------------- FPN
def test_fpn_outputs():
    cfg = _cfg(18, name="build_resnet_fpn_backbone", freeze_at=0)
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    fpn = build_backbone(cfg).eval()
    assert isinstance(fpn, FPN) and fpn.size_divisibility == 32
    assert fpn.padding_constraints["size_divisibility"] == 32
    shapes = fpn.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert all(s.channels == 32 for s in shapes.values())
    with torch.no_grad():
        out = fpn(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 32, 16, 16), "p3": (1, 32, 8, 8), "p4": (1, 32, 4, 4), "p5": (1, 32, 2, 2), "p6": (1, 32, 1, 1)}
    # p6 is the stride-2 subsample of p5
    assert torch.equal(out["p6"], out["p5"][:, :, ::2, ::2])
    with pytest.raises(ValueError, match="divisible by 32"):
        fpn(torch.randn(1, 3, 64, 48))


def test_fpn_top_down_sum_by_hand():
    """p5 = out5(lat5(res5)); p4 = out4(lat4(res4) + up2(lat5(res5))) (FPN paper, Fig. 3)."""
    cfg = _cfg(18, out=["res4", "res5"], freeze_at=0, name="build_resnet_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    fpn = build_backbone(cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = fpn(x)
        feats = fpn.bottom_up(x)
        lat5 = fpn.fpn_lateral5(feats["res5"])
        p4 = fpn.fpn_output4(fpn.fpn_lateral4(feats["res4"]) + lat5.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.allclose(out["p5"], fpn.fpn_output5(lat5), atol=1e-5)
    assert torch.allclose(out["p4"], p4, atol=1e-5)


def test_retinanet_fpn_outputs():
    cfg = _cfg(18, out=["res3", "res4", "res5"], name="build_retinanet_resnet_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    fpn = build_backbone(cfg).eval()
    shapes = fpn.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    with torch.no_grad():
        out = fpn(torch.randn(1, 3, 128, 128))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert fpn.top_block.p6.in_channels == 512  # fed from res5


def test_fpn_bad_in_features():
    cfg = _cfg(18, out=["res3", "res5"], name="build_resnet_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res5"]
    with pytest.raises(ValueError, match="log2 contiguous"):
        build_backbone(cfg)
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_backbone(cfg)


# ---------------------------------------------------------------- state-dict layout vs the authors' models
_REFERENCE_CONFIGS = {
    "sparsercnn.res50.100pro.3x.json": dict(depth=50, name="build_resnet_fpn_backbone", fpn=("res2", "res3", "res4", "res5")),
    "onenet.res18.nodcn.json": dict(depth=18, norm="BN", freeze_at=0),
    "onenet.res18.dcn.json": dict(depth=18, norm="BN", freeze_at=0),
    "onenet.res50.nodcn.json": dict(depth=50, norm="BN", freeze_at=0),
    "onenet.res50.dcn.json": dict(depth=50, norm="BN", freeze_at=0),
    "onenet.fcos.res50.json": dict(depth=50, out=("res3", "res4", "res5"), name="build_retinanet_resnet_fpn_backbone",
                                   fpn=("res3", "res4", "res5")),
    "onenet.retinanet.res50.json": dict(depth=50, out=("res3", "res4", "res5"),
                                        name="build_retinanet_resnet_fpn_backbone", fpn=("res3", "res4", "res5")),
}


@pytest.mark.parametrize("fname", sorted(_REFERENCE_CONFIGS))
def test_backbone_state_dict_matches_reference(fname):
    path = STATE_DICTS / fname
    if not path.is_file():
        pytest.skip(f"{path} not available")
    spec = dict(_REFERENCE_CONFIGS[fname])
    fpn_in = spec.pop("fpn", None)
    cfg = _cfg(**spec)
    if fpn_in:
        cfg.MODEL.FPN.IN_FEATURES = list(fpn_in)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        backbone = build_backbone(cfg)
    ours = [("backbone." + k, list(v.shape)) for k, v in backbone.state_dict().items()]
    ref = [(k, v) for k, v in json.loads(path.read_text()).items() if k.startswith("backbone.")]
    assert ours == ref  # same keys, same shapes, same order


# ---------------------------------------------------------------- registries / builders
def _register_once(registry, obj):
    if obj.__name__ not in registry:  # tests may run twice in one process
        registry.register(obj)


def _test_not_a_backbone(cfg, input_shape):
    return nn.Conv2d(input_shape.channels, 1, 1)


class _TestArch(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)


def test_build_backbone_type_check_and_build_model():
    _register_once(BACKBONE_REGISTRY, _test_not_a_backbone)
    _register_once(META_ARCH_REGISTRY, _TestArch)
    cfg = _cfg(18)
    cfg.MODEL.BACKBONE.NAME = "_test_not_a_backbone"
    with pytest.raises(TypeError, match="Backbone"):
        build_backbone(cfg)

    cfg = _cfg(18, out=["res2"])
    cfg.MODEL.META_ARCHITECTURE = "_TestArch"
    model = build_model(cfg)
    assert isinstance(model.backbone, Backbone) and next(model.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cuda"
        with pytest.raises(RuntimeError, match="MODEL.DEVICE"):
            build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "_NoSuchArch"
    with pytest.raises(KeyError):
        build_model(cfg)


# ---------------------------------------------------------------- ROIPooler
def test_level_assignment():
    sides = [20.0, 56.0, 111.9, 112.0, 224.0, 447.0, 448.0, 1000.0]
    boxes = Boxes(torch.tensor([[0.0, 0.0, s, s] for s in sides]))
    # floor(4 + log2(side / 224)) clamped to [2, 5], minus min level 2
    expected = [max(2, min(5, math.floor(4 + math.log2(s / 224 + 1e-8)))) - 2 for s in sides]
    assert expected == [0, 0, 0, 1, 2, 2, 3, 3]
    assert assign_boxes_to_levels([boxes], 2, 5, 224, 4).tolist() == expected


def test_roi_pooler_picks_level_and_keeps_image_order():
    pooler = ROIPooler(2, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=2, pooler_type="ROIAlignV2")
    assert pooler.min_level == 2 and pooler.max_level == 5
    # level l of image n is the constant 10 * l + n, so each pooled row reveals (level, image)
    feats = [
        (10 * lvl + torch.arange(2.0)).view(2, 1, 1, 1).expand(2, 3, 512 // 2 ** (lvl + 2), 512 // 2 ** (lvl + 2))
        .contiguous() for lvl in range(4)
    ]
    boxes = [Boxes([[0, 0, 224, 224], [10, 10, 66, 66]]), Boxes([[100, 100, 212, 212]])]
    out = pooler(feats, boxes)
    assert out.shape == (3, 3, 2, 2)
    assert out[:, 0, 0, 0].tolist() == [20.0, 0.0, 11.0]


def test_roi_pooler_empty_inputs():
    pooler = ROIPooler((3, 3), scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlign")
    feats = [torch.rand(0, 5, 8, 8), torch.rand(0, 5, 4, 4)]
    assert pooler(feats, []).shape == (0, 5, 3, 3)
    feats = [torch.rand(2, 5, 8, 8), torch.rand(2, 5, 4, 4)]
    assert pooler(feats, [Boxes([]), Boxes([])]).shape == (0, 5, 3, 3)
    with pytest.raises(ValueError):
        pooler(feats, [Boxes([])])
    with pytest.raises(ValueError, match="pooler type"):
        ROIPooler(7, scales=(1 / 4,), sampling_ratio=0, pooler_type="ROIAlignV3")
    with pytest.raises(ValueError):
        ROIPooler(7, scales=(1 / 3,), sampling_ratio=0, pooler_type="ROIAlign")


# ---------------------------------------------------------------- postprocessing
def test_detector_postprocess_scales_clips_and_drops():
    inst = Instances((50, 100))  # network input (h, w)
    inst.pred_boxes = Boxes([[10, 10, 20, 20], [90, 40, 110, 60], [120, 0, 130, 10]])
    inst.scores = torch.tensor([0.9, 0.8, 0.7])
    inst.pred_classes = torch.tensor([1, 2, 3])
    out = detector_postprocess(inst, 100, 200)  # x2 in both directions
    assert out.image_size == (100, 200)
    # box 2 is clipped to x in [180, 200], y in [80, 100]; box 3 lies right of the image -> zero width, dropped
    assert out.pred_boxes.tensor.tolist() == [[20, 20, 40, 40], [180, 80, 200, 100]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8]) and out.pred_classes.tolist() == [1, 2]
    anisotropic = Instances((50, 100), pred_boxes=Boxes([[10, 10, 20, 20]]))
    assert detector_postprocess(anisotropic, 25, 300).pred_boxes.tensor.tolist() == [[30, 5, 60, 10]]
    with pytest.raises(ValueError, match="pred_boxes"):
        detector_postprocess(Instances((5, 5), scores=torch.ones(1)), 10, 10)


def test_register_pixel_stats_buffers_and_errors():
    from torch import nn

    from common.config import get_cfg
    from common.modeling import register_pixel_stats

    cfg = get_cfg()
    m = nn.Module()
    register_pixel_stats(m, cfg)
    assert m.pixel_mean.shape == (3, 1, 1) and m.pixel_std.flatten().tolist() == [1.0, 1.0, 1.0]
    assert "pixel_mean" not in m.state_dict()  # the authors' checkpoints have no such key
    cfg.MODEL.PIXEL_STD = [1.0, 1.0]
    with pytest.raises(ValueError, match="MODEL.PIXEL_MEAN"):
        register_pixel_stats(nn.Module(), cfg)
