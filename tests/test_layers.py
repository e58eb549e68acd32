"""Tests for common.layers (and the common.ops re-exports)."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.layers import (
    CNNBlockBase,
    Conv2d,
    DeformConv,
    FrozenBatchNorm2d,
    ModulatedDeformConv,
    ROIAlign,
    ShapeSpec,
    batched_nms,
    cat,
    get_norm,
    nonzero_tuple,
)


def test_shape_spec_defaults():
    s = ShapeSpec(channels=256, stride=8)
    assert s == (256, None, None, 8)
    assert s.height is None and s.stride == 8
    assert ShapeSpec() == (None, None, None, None)


def test_cat_and_nonzero_tuple():
    t = torch.ones(2)
    assert cat([t]) is t
    assert cat([t, t]).shape == (4,)
    with pytest.raises(TypeError):
        cat(t)
    rows, cols = nonzero_tuple(torch.tensor([[0, 1], [1, 0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    assert nonzero_tuple(torch.tensor(3))[0].tolist() == [0]


def test_conv2d_with_norm_keys_and_forward():
    conv = Conv2d(3, 4, kernel_size=3, padding=1, bias=False, norm=get_norm("BN", 4), activation=F.relu)
    assert list(conv.state_dict()) == [
        "weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
    ]
    conv.eval()
    x = torch.randn(2, 3, 5, 5)
    expected = F.relu(conv.norm(F.conv2d(x, conv.weight, None, padding=1)))
    assert torch.allclose(conv(x), expected)
    assert isinstance(conv, nn.Conv2d)
    plain = Conv2d(3, 4, kernel_size=1)
    assert list(plain.state_dict()) == ["weight", "bias"] and plain.norm is None


def test_get_norm():
    assert isinstance(get_norm("BN", 8), nn.BatchNorm2d)
    assert isinstance(get_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    assert isinstance(get_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)
    with pytest.raises(ValueError, match="Unknown norm"):
        get_norm("BatchNorm", 8)


def _random_bn(c=5):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    return bn.eval()


def test_frozen_bn_matches_eval_batchnorm():
    bn = _random_bn()
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert len(list(frozen.parameters())) == 0
    x = torch.randn(2, 5, 3, 3)
    ref = bn(x)
    assert torch.allclose(frozen(x), ref, atol=1e-6)  # F.batch_norm path
    xg = x.clone().requires_grad_()
    out = frozen(xg)  # fused scale/shift path used when gradients flow
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(xg.grad, scale.view(1, -1, 1, 1).expand_as(x), atol=1e-6)
    # default init is the identity
    ident = FrozenBatchNorm2d(5)
    assert torch.allclose(ident(x), x, atol=1e-6)


def test_convert_frozen_batchnorm_in_place_keeps_key_order():
    m = nn.Sequential(nn.Conv2d(3, 5, 1), _random_bn(), nn.ReLU())
    keys_before = [k for k in m.state_dict() if not k.endswith("num_batches_tracked")]
    x = torch.randn(1, 3, 4, 4)
    ref = m(x)
    out_module = FrozenBatchNorm2d.convert_frozen_batchnorm(m)
    assert out_module is m and isinstance(m[1], FrozenBatchNorm2d)
    assert list(m.state_dict()) == keys_before
    assert torch.allclose(m(x), ref, atol=1e-6)


def test_frozen_bn_state_dict_upgrade():
    fbn = FrozenBatchNorm2d(3)
    # version 1 checkpoints without statistics: identity stats are filled in (var 1 under the old
    # "no +eps" semantics, i.e. 1 - eps after the version-3 upgrade), no missing keys
    sd = OrderedDict(weight=torch.full((3,), 2.0), bias=torch.zeros(3))
    sd._metadata = {"": {"version": 1}}
    result = fbn.load_state_dict(sd, strict=True)
    assert not result.missing_keys
    assert torch.allclose(fbn.running_var, torch.full((3,), 1.0 - fbn.eps)) and fbn.weight.tolist() == [2.0, 2.0, 2.0]
    # version 2 stored var without +eps: eps is subtracted on load
    sd = OrderedDict((k, v.clone()) for k, v in FrozenBatchNorm2d(3).state_dict().items())
    sd["running_var"] = torch.full((3,), 4.0)
    sd._metadata = {"": {"version": 2}}
    fbn.load_state_dict(sd)
    assert torch.allclose(fbn.running_var, torch.full((3,), 4.0 - fbn.eps))
    # the current version saves itself as 3 and round-trips unchanged
    saved = fbn.state_dict()
    assert saved._metadata[""]["version"] == 3
    other = FrozenBatchNorm2d(3)
    other.load_state_dict(saved)
    assert torch.equal(other.running_var, fbn.running_var)


def test_cnn_block_freeze():
    class Block(CNNBlockBase):
        def __init__(self):
            super().__init__(3, 4, 1)
            self.conv = Conv2d(3, 4, 1, norm=nn.BatchNorm2d(4))

    b = Block().freeze()
    assert isinstance(b.conv.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in b.parameters())


def test_batched_nms_hand_example():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float16)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 0, 1, 0])
    # box 1 overlaps box 0 with IoU 81/100 > 0.5 in the same class; box 2 is another class
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2, 3]
    assert batched_nms(boxes, scores, idxs, 0.9).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        batched_nms(torch.zeros(2, 5), scores[:2], idxs[:2], 0.5)


# ---------------------------------------------------------------- ROIAlign
def _ramp():
    # value at row y, column x is 5y + x (a linear function, so bilinear sampling is exact)
    return torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_ramp_exact(aligned):
    roi = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
    out = ROIAlign((4, 4), spatial_scale=1.0, sampling_ratio=0, aligned=aligned)(_ramp(), roi)[0, 0]
    # the 2x2-px box is split into 4x4 bins of 0.5 px; adaptive sampling takes 1 point per bin at its
    # centre: 1.25, 1.75, 2.25, 2.75 (aligned=False) or shifted by -0.5 px (aligned=True)
    centres = torch.tensor([1.25, 1.75, 2.25, 2.75]) - (0.5 if aligned else 0.0)
    expected = 5 * centres[:, None] + centres[None, :]
    assert torch.allclose(out, expected, atol=1e-5)
    if not aligned:
        assert out[0].tolist() == [7.5, 8.0, 8.5, 9.0]
    else:
        assert out[0].tolist() == [4.5, 5.0, 5.5, 6.0]


def test_roi_align_empty_and_errors():
    pooler = ROIAlign(7, spatial_scale=0.5, sampling_ratio=2)
    assert pooler.output_size == (7, 7)
    assert pooler(torch.rand(1, 3, 8, 8), torch.zeros(0, 5)).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError):
        pooler(torch.rand(1, 3, 8, 8), torch.zeros(2, 4))
    assert "aligned=True" in repr(pooler)


# ---------------------------------------------------------------- deformable conv
@pytest.mark.parametrize("stride,padding,dilation,groups,dg", [(1, 1, 1, 1, 1), (2, 2, 2, 2, 2)])
def test_deform_conv_zero_offset_equals_conv(stride, padding, dilation, groups, dg):
    torch.manual_seed(0)
    conv = DeformConv(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      deformable_groups=dg)
    assert [n for n, _ in conv.named_parameters()] == ["weight"]
    assert conv.weight.shape == (6, 4 // groups, 3, 3)
    x = torch.randn(2, 4, 7, 7)
    ref = F.conv2d(x, conv.weight, None, stride, padding, dilation, groups)
    offset = torch.zeros(2, 2 * dg * 9, *ref.shape[-2:])
    assert torch.allclose(conv(x, offset), ref, atol=1e-5)


def test_deform_conv_half_pixel_offset_hand_values():
    conv = DeformConv(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    offset = torch.full((1, 18, 5, 5), 0.5)  # every tap moves by +0.5 px in y and x
    out = conv(_ramp(), offset)[0, 0]
    # interior outputs sample 9 points (y+dy+0.5, x+dx+0.5) inside the image; on the ramp 5y+x the
    # sum is 9 * (5 (y + 0.5) + (x + 0.5)) = 9 * (5y + x + 3)
    for y in (1, 2):
        for x in (1, 2):
            assert out[y, x].item() == pytest.approx(9 * (5 * y + x + 3), abs=1e-4)
    mconv = ModulatedDeformConv(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        mconv.weight.fill_(1.0)
    half = mconv(_ramp(), offset, torch.full((1, 9, 5, 5), 0.5))[0, 0]
    assert torch.allclose(half, out / 2, atol=1e-5)


def test_modulated_deform_conv_bias_keys_and_shape_errors():
    m = ModulatedDeformConv(2, 3, 3, padding=1)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert torch.equal(m.bias, torch.zeros(3))
    assert list(ModulatedDeformConv(2, 3, 3, bias=False).state_dict()) == ["weight"]
    x = torch.randn(1, 2, 4, 4)
    out = m(x, torch.zeros(1, 18, 4, 4), torch.ones(1, 9, 4, 4))
    assert torch.allclose(out, F.conv2d(x, m.weight, m.bias, padding=1), atol=1e-5)
    with pytest.raises(ValueError, match="offset"):
        m(x, torch.zeros(1, 17, 4, 4), torch.ones(1, 9, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        m(x, torch.zeros(1, 18, 4, 4), torch.ones(1, 8, 4, 4))
    with pytest.raises(ValueError):
        DeformConv(2, 3, 3, bias=True)
    empty = m(torch.zeros(0, 2, 4, 4), torch.zeros(0, 18, 4, 4), torch.zeros(0, 9, 4, 4))
    assert empty.shape == (0, 3, 4, 4)
    assert "deformable_groups=1" in repr(m)


def test_ops_reexports():
    import common.ops as ops

    assert ops.DeformConv is DeformConv and ops.ModulatedDeformConv is ModulatedDeformConv
    assert ops.ROIAlign is ROIAlign


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deform_conv_and_roi_align_cuda_match_cpu():
    torch.manual_seed(0)
    m = ModulatedDeformConv(4, 6, 3, padding=1, deformable_groups=2)
    x, offset, mask = torch.randn(2, 4, 6, 6), torch.randn(2, 36, 6, 6), torch.rand(2, 18, 6, 6)
    ref = m(x, offset, mask)
    out = m.cuda()(x.cuda(), offset.cuda(), mask.cuda())
    assert torch.allclose(out.cpu(), ref, atol=1e-4)
    pooler = ROIAlign(3, spatial_scale=0.5, sampling_ratio=2, aligned=True)
    rois = torch.tensor([[0.0, 1.0, 2.0, 9.0, 7.0], [1.0, 0.0, 0.0, 11.0, 11.0]])
    feats = torch.randn(2, 4, 6, 6)
    assert torch.allclose(pooler(feats.cuda(), rois.cuda()).cpu(), pooler(feats, rois), atol=1e-5)
