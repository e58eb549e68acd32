"""CornerNet-Saccade: Hourglass-54 with merge outputs, attention targets and loss, and the saccade
inference (crops taken from hand-made attention maps, boxes mapped back exactly), against the
authors' rules (princeton-vl/CornerNet-Lite ``core/test/cornernet_saccade.py``,
``core/sample/cornernet_saccade.py``, ``core/models/py_utils/losses.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import get_cfg
from common.losses import heatmap_focal_loss
from common.modeling import build_model
from common.modeling.backbone.hourglass import StackedHourglass
from common.structures import Boxes, Instances
from projects.CornerNet.cornernet import (add_cornernet_config, attention_locations, attention_targets,
                                          crop_and_resize, location_nms, reference_locations)
from projects.CornerNet.cornernet.decode import cornernet_decode
from projects.CornerNet.cornernet.saccade import remap_boxes

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "CornerNet" / "configs"


def _cfg(config="cornernet_saccade.bccd.yaml", *opts):
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list(list(opts))
    return cfg


def test_hourglass_merges_are_the_levels_outputs():
    torch.manual_seed(0)
    hg = StackedHourglass(2, (8, 12, 12, 16), (1, 1, 1, 1), 8, 8, out_merges=True).eval()
    plain = StackedHourglass(2, (8, 12, 12, 16), (1, 1, 1, 1), 8, 8).eval()
    plain.load_state_dict(hg.state_dict())
    x = torch.randn(1, 3, 64, 64)
    out, ref = hg(x), plain(x)
    assert set(ref) == {"hg0", "hg1"}
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=0)
    shapes = hg.output_shape()
    for s in range(2):
        for lvl, (c, hw, stride) in enumerate([(8, 16, 4), (12, 8, 8), (12, 4, 16)]):
            t = out[f"hg{s}_merge{lvl}"]
            assert t.shape == (1, c, hw, hw) and shapes[f"hg{s}_merge{lvl}"].stride == stride
    # level 0's merge is the module output that feeds cnvs[0]
    torch.testing.assert_close(hg.cnvs[0](out["hg0_merge0"]), out["hg0"], rtol=0, atol=0)
    # the merge of level 1 is up1 + up2 of the second level, computed by hand
    inter = hg.pre(x)
    lvl1 = hg.kps[0].low2
    low1 = hg.kps[0].low1(inter)
    manual = lvl1.up1(low1) + F.interpolate(lvl1.low3(lvl1.low2(lvl1.low1(low1))), scale_factor=2.0)
    torch.testing.assert_close(out["hg0_merge1"], manual)


def test_attention_targets_mark_each_object_on_the_map_of_its_size():
    boxes = torch.tensor([
        [10.0, 10.0, 30.0, 20.0],  # max side 20 -> small (map 2), centre (20, 15) -> cell (5, 3) at stride 4
        [0.0, 0.0, 32.0, 8.0],  # exactly 32: small AND medium
        [100.0, 60.0, 150.0, 100.0],  # 50 -> medium, centre (125, 80) -> (15, 10) at stride 8
        [40.0, 40.0, 240.0, 140.0],  # 200 -> large, centre (140, 90) -> (8, 5) at stride 16
        [0.0, 0.0, 255.0, 257.0],  # 257 > 256: no map
    ])
    maps = attention_targets(boxes, [(16, 16), (32, 32), (64, 64)], [16, 8, 4], [(96, 256), (32, 96), (0, 32)])
    large, medium, small = (m[0].nonzero().tolist() for m in maps)
    assert large == [[5, 8]]
    assert sorted(medium) == [[0, 2], [10, 15]]  # (y, x): the 32-px box's centre (16, 4) / 8
    assert sorted(small) == [[1, 4], [3, 5]]  # (4 / 4, 16 / 4) and (15 / 4, 20 / 4)
    assert all(m.dtype == torch.float32 and m.max() == 1 for m in maps)
    assert attention_targets(torch.zeros(0, 4), [(4, 4)], [4], [(0, 32)])[0].sum() == 0


def _authors_crop(image, y, x, scale, in_h, in_w):
    """princeton-vl/CornerNet-Lite crop_image_gpu, written out literally for one crop."""
    out = torch.zeros(image.shape[0], in_h, in_w)
    cty, ctx = int(y), int(x)
    height, width = int(in_h / scale), int(in_w / scale)
    im_h, im_w = image.shape[1:]
    zoom = in_h / max(height, width)
    x0, x1 = max(0, ctx - width // 2), min(ctx + width // 2, im_w)
    y0, y1 = max(0, cty - height // 2), min(cty + height // 2, im_h)
    left, right, top, bottom = ctx - x0, x1 - ctx, cty - y0, y1 - cty
    oy0, oy1 = in_h // 2 - int(top * zoom), in_h // 2 + int(bottom * zoom)
    ox0, ox1 = in_w // 2 - int(left * zoom), in_w // 2 + int(right * zoom)
    out[:, oy0:oy1, ox0:ox1] = F.interpolate(image[None, :, y0:y1, x0:x1], size=[oy1 - oy0, ox1 - ox0],
                                             mode="bilinear", align_corners=False)[0]
    return out, (cty - height // 2, ctx - width // 2)


def test_crop_and_resize_equals_the_authors_crops():
    torch.manual_seed(0)
    image = torch.rand(3, 120, 160) * 255
    locs = torch.tensor([[60.0, 80.0, 63 / 160], [10.3, 150.9, 1.6], [100.0, 20.0, 0.8], [60.0, 80.0, 4.0],
                         [0.0, 0.0, 2.0]], dtype=torch.float64)
    crops, offsets = crop_and_resize(image, locs, (63, 63))
    assert crops.shape == (5, 3, 63, 63)
    for i, (y, x, s) in enumerate(locs.tolist()):
        ref, off = _authors_crop(image, y, x, s, 63, 63)
        torch.testing.assert_close(crops[i], ref, rtol=0, atol=1e-3)
        assert offsets[i].tolist() == [float(off[0]), float(off[1])]
    # whole image at 63/160: 160 x 160 window centred on (60, 80) -> offset (-20, 0); its 60 rows
    # above and below the centre become int(60 * 63 / 160) = 23: content rows 31 - 23 .. 31 + 23
    assert offsets[0].tolist() == [-20.0, 0.0]
    assert crops[0, :, :8].abs().max() == 0 and crops[0, :, 54:].abs().max() == 0
    assert crops[0, :, 8].abs().max() > 0 and crops[0, :, 53].abs().max() > 0


def test_remap_boxes_inverts_the_crop_geometry():
    # A box at crop-input (10, 20)-(50, 60) of a zoom-2 crop whose window starts at (y, x) = (100, 30).
    boxes = torch.tensor([[[10.0, 20.0, 50.0, 60.0]]])
    out = remap_boxes(boxes, torch.tensor([2.0]), torch.tensor([[100.0, 30.0]]))
    assert out.tolist() == [[[35.0, 110.0, 55.0, 130.0]]]


def test_attention_locations_from_a_hand_made_map():
    # Two inputs of a 480x640 image: zoom 0.4 (offset (-80, 0): a 640x640 window around the
    # centre) and zoom 2.5 (too zoomed to follow: > MAX_SOURCE_SCALE 2).
    scales = torch.tensor([0.4, 2.5])
    offsets = torch.tensor([[-80.0, 0.0], [100.0, 200.0]])
    large, medium, small = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 16, 16)
    large[0, 0, 3, 3] = 0.9  # -> y = 3 * 16 / 0.4 - 80 = 40, x = 3 * 16 / 0.4 = 120, zoom 1 x 0.4
    large[0, 0, 2, 2] = 0.9  # -> y = 32 / 0.4 - 80 = -1e-6 in float32 (0.4 > 2 / 5): above the image, dropped
    medium[0, 0, 5, 1] = 0.3  # not above the threshold
    medium[0, 0, 6, 7] = 0.31  # -> y = 6 * 8 / 0.4 - 80 = 40, x = 140, zoom 2 x 0.4 = 0.8
    medium[0, 0, 0, 0] = 0.8  # -> y = -80: in the padding above the image, dropped
    small[0, 0, 10, 2] = 0.5  # -> y = 10 * 4 / 0.4 - 80 = 20, x = 20, zoom 4 x 0.4 = 1.6
    small[1, 0, 3, 3] = 0.99  # source zoom 2.5 > 2: not followed
    locs = attention_locations([large, medium, small], [16, 8, 4], [1, 2, 4], scales, offsets, (480, 640), 0.3)
    expected = [[40.0, 120.0, 0.4, 0.9], [40.0, 140.0, 0.8, 0.31], [20.0, 20.0, 1.6, 0.5]]
    np.testing.assert_allclose(locs.numpy(), expected, rtol=1e-6, atol=1e-5)
    # zoom 4 of a 1.2 input = 4.8 > MAX_CROP_SCALE 4; ignore_same drops maps of zoom <= 1
    locs = attention_locations([large, medium, small], [16, 8, 4], [1, 2, 4], torch.tensor([1.2, 2.5]),
                               torch.zeros(2, 2), (480, 640), 0.3, ignore_same=True)
    np.testing.assert_allclose(locs[:, :3].numpy(), [[0.0, 0.0, 2.4], [6 * 8 / 1.2, 7 * 8 / 1.2, 2.4]],
                               rtol=1e-6, atol=1e-5)  # medium cells (0, 0) and (6, 7), row-major


def test_reference_locations_zoom_by_size_class():
    boxes = torch.tensor([[0.0, 0.0, 150.0, 100.0], [10.0, 10.0, 60.0, 40.0], [0.0, 0.0, 20.0, 10.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.6, 0.51, 0.5])  # the last is not above 0.5
    locs = reference_locations(boxes, scores)
    np.testing.assert_allclose(locs.numpy(), [[50.0, 75.0, 192 / 150, 1], [25.0, 35.0, 64 / 50, 1],
                                              [5.0, 10.0, 24 / 20, 1]], rtol=1e-6)


def _greedy_location_nms(locs, thresh=16.0):
    """The authors' loop, literally."""
    order = np.argsort(-locs[:, 3], kind="stable")
    locs = locs[order]
    kept = []
    while len(locs):
        kept.append(locs[0])
        y, x, s = locs[0, :3]
        dist = np.minimum(np.abs(locs[:, 0] - y), np.abs(locs[:, 1] - x))
        ratio = s / locs[:, 2]
        locs = locs[(dist > thresh / s) | (ratio > 1.2) | (ratio < 0.8)]
    return np.stack(kept)


def test_location_nms_is_the_authors_greedy_merge():
    locs = torch.tensor([
        [100.0, 100.0, 1.0, 1.0],
        [110.0, 300.0, 1.1, 0.9],  # |dy| = 10 <= 16: merged into the first (min of the axis distances)
        [100.0, 100.0, 2.0, 0.8],  # same place, zoom ratio 0.5: kept
        [105.0, 105.0, 2.1, 0.7],  # merged into the previous one (5 <= 16 / 2, ratio 0.95)
        [300.0, 400.0, 1.0, 0.6],
    ], dtype=torch.float64)
    kept = location_nms(locs)
    assert kept[:, 3].tolist() == [1.0, 0.8, 0.6]
    rng = np.random.default_rng(0)
    for _ in range(20):
        rand = np.concatenate([rng.uniform(0, 200, (40, 2)), rng.uniform(0.5, 3, (40, 1)), rng.uniform(0, 1, (40, 1))], 1)
        np.testing.assert_array_equal(location_nms(torch.from_numpy(rand)).numpy(), _greedy_location_nms(rand))


def test_no_border_rejects_pairs_touching_the_crop_border():
    H = W = 8
    tl, br = torch.zeros(1, 1, H, W), torch.zeros(1, 1, H, W)
    tl[0, 0, 0, 3] = 0.9  # first row
    tl[0, 0, 2, 2] = 0.8
    br[0, 0, 5, 7] = 0.9  # last column
    br[0, 0, 4, 5] = 0.7  # not within the 3x3 peak window of the other
    z1, z2 = torch.zeros(1, 1, H, W), torch.zeros(1, 2, H, W)
    args = (tl, br, z1, z1, z2, z2, 2, 0.5, 3, 4)
    plain, cut = cornernet_decode(*args), cornernet_decode(*args, no_border=True)
    valid = {tuple(b) for b, s in zip(plain["boxes"][0].tolist(), plain["scores"][0].tolist()) if s > -1}
    assert valid == {(3.0, 0.0, 7.0, 5.0), (3.0, 0.0, 5.0, 4.0), (2.0, 2.0, 7.0, 5.0), (2.0, 2.0, 5.0, 4.0)}
    kept = [(b, s) for b, s in zip(cut["boxes"][0].tolist(), cut["scores"][0].tolist()) if s > -1]
    assert kept == [([2.0, 2.0, 5.0, 4.0], pytest.approx(0.75))]


def test_masked_focal_loss_ignores_masked_pixels():
    pred = torch.full((1, 1, 2, 2), 0.5)
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    # positive: log(.5) .25; negatives (1, 0): log(.5) .25 (weight 1), (1, 1): log(.5) .25 (1 - .5)^4
    expected = -(np.log(0.5) * 0.25 + np.log(0.5) * 0.25 + np.log(0.5) * 0.25 * 0.0625)
    assert float(heatmap_focal_loss(pred, gt, mask=mask)) == pytest.approx(expected, rel=1e-6)
    assert float(heatmap_focal_loss(pred, gt)) == pytest.approx(expected - np.log(0.5) * 0.25, rel=1e-6)


def test_saccade_targets_and_losses():
    torch.manual_seed(0)
    model = build_model(_cfg())
    model.train()
    inst = Instances((255, 255))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 140.0], [200.0, 200.0, 240.0, 230.0],
                                        [0.0, 100.0, 20.0, 130.0]]))
    inst.gt_classes = torch.tensor([0, 1, 2])
    inst.gt_ignore = torch.tensor([False, False, True])
    targets = model.prepare_saccade_targets([inst], (255, 255), (64, 64), [(16, 16), (32, 32), (64, 64)])
    assert targets["classes"].tolist() == [0, 1]  # the ignored object is no positive
    r = 64 / 255
    # the ignored object's corners are masked in its class only
    assert targets["tl_valid"][0, 2, int(100 * r), 0] == 0 and targets["tl_valid"][0, :2].min() == 1
    assert targets["br_valid"][0, 2, int(130 * r), int(20 * r)] == 0
    # attention: 120 px -> large at (80 / 16, 65 / 16); 40 px -> medium at (215 / 8, 220 / 8); the
    # ignored 30 px one -> small at (115 / 4, 10 / 4)
    att = [a[0, 0].nonzero().tolist() for a in targets["att"]]
    assert att == [[[5, 4]], [[26, 27]], [[28, 2]]]
    losses = model([{"image": torch.rand(3, 255, 255) * 255, "instances": inst}])
    assert set(losses) == {"loss_heatmap", "loss_pull", "loss_push", "loss_offset", "loss_attention"}
    assert all(torch.isfinite(v) for v in losses.values())
    # empty crop: finite losses
    empty = Instances((255, 255))
    empty.gt_boxes, empty.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
    empty.gt_ignore = torch.zeros(0, dtype=torch.bool)
    losses = model([{"image": torch.rand(3, 255, 255) * 255, "instances": empty}])
    assert all(torch.isfinite(v) for v in losses.values())


def test_attention_loss_is_the_authors_normalisation():
    torch.manual_seed(0)
    model = build_model(_cfg())
    model.train()
    inst = Instances((255, 255))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 140.0]]))
    inst.gt_classes = torch.tensor([0])
    inst.gt_ignore = torch.tensor([False])
    image = torch.rand(3, 255, 255) * 255
    losses = model([{"image": image, "instances": inst}])
    feats = model.backbone(model._normalize(image)[None])
    targets = model.prepare_saccade_targets([inst], (255, 255), (64, 64), [(16, 16), (32, 32), (64, 64)])
    total = 0.0
    for s, names in enumerate(model.att_features):
        for j, n in enumerate(names):
            p = model.attention_heads[s][j](feats[n]).sigmoid().clamp(1e-4, 1 - 1e-4)
            total += heatmap_focal_loss(p, targets["att"][j])
    # [CNL] CornerNet_Saccade_Loss: sum over stacks / stacks per map, then the whole loss / stacks
    assert float(losses["loss_attention"]) == pytest.approx(float(total) / 4, rel=1e-5)


class _HandMadeSaccade:
    """Replaces the network part of ``_run_inputs``: records the crops it receives and returns a
    hand-made attention map for the downsized inputs and one detection per crop."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, crops, with_attention):
        n = crops.shape[0]
        self.calls.append(crops.clone())
        boxes = torch.tensor([[100.0, 110.0, 150.0, 140.0], [0.0, 0.0, 1.0, 1.0]]).expand(n, 2, 4).clone()
        scores = torch.tensor([[0.45, -1.0]]).expand(n, 2).clone()
        classes = torch.tensor([[1, 0]]).expand(n, 2).clone()
        atts = None
        if with_attention:
            atts = [torch.zeros(n, 1, 16, 16), torch.zeros(n, 1, 32, 32), torch.zeros(n, 1, 64, 64)]
            atts[1][1, 0, 20, 12] = 0.6  # input 1 (zoom 255/640): medium object
            atts[2][1, 0, 40, 50] = 0.35  # small object
            atts[2][0, 0, 30, 30] = 0.2  # below the threshold
        return {"boxes": boxes, "scores": scores, "classes": classes}, atts


def test_saccade_inference_takes_the_attended_crops_and_maps_boxes_back(monkeypatch):
    model = build_model(_cfg()).eval()
    fake = _HandMadeSaccade(model)
    monkeypatch.setattr(model, "_run_inputs", fake)
    image = torch.zeros(3, 480, 640, dtype=torch.uint8)
    boxes, scores, classes, info = model.saccade_inference(image)
    # calls: the two downsized inputs, then one batch of the attended crops
    assert len(fake.calls) == 2 and fake.calls[0].shape[0] == 2 and fake.calls[1].shape[0] == 2
    s = 255 / 640  # float32 in the authors' code
    s32 = float(torch.tensor(s, dtype=torch.float32))
    off_y = 240 - int(255 / s32) // 2  # the 640 x 640 window around (240, 320)
    # medium cell (20, 12) at stride 8 -> zoom 2 s; small cell (40, 50) at stride 4 -> zoom 4 s;
    # sorted by attention score
    exp = [[20 * 8 / s32 + off_y, 12 * 8 / s32, 2 * s32, 0.6], [40 * 4 / s32 + off_y, 50 * 4 / s32, 4 * s32, 0.35]]
    np.testing.assert_allclose(info["locations"].numpy(), exp, rtol=1e-6)
    assert info["num_crops"] == 2
    # every input returned the box (100, 110)-(150, 140) in input pixels, score 0.45 (above
    # INIT_SCORE_THRESH 0.3 for the downsized inputs); each maps back by / zoom + window offset
    expected = []
    init_offsets = [(240 - int(255 / float(torch.tensor(z, dtype=torch.float32))) // 2,
                     320 - int(255 / float(torch.tensor(z, dtype=torch.float32))) // 2) for z in (192 / 640, s)]
    for (oy, ox), z in zip(init_offsets, (192 / 640, s)):
        z = float(torch.tensor(z, dtype=torch.float32))
        expected.append([100 / z + ox, 110 / z + oy, 150 / z + ox, 140 / z + oy])
    for y, x, z, _ in exp:
        oy, ox = int(y) - int(255 / z) // 2, int(x) - int(255 / z) // 2
        expected.append([100 / z + ox, 110 / z + oy, 150 / z + ox, 140 / z + oy])
    got = sorted(boxes.tolist())
    np.testing.assert_allclose(got, sorted(expected), rtol=1e-5, atol=1e-3)
    assert set(classes.tolist()) == {1}
    # Gaussian soft-NMS (sigma 0.7) decays the overlapping ones below the first 0.45
    assert float(scores[0]) == pytest.approx(0.45) and bool((scores[1:] <= 0.45 + 1e-6).all())


def test_saccade_inference_respects_max_crops_and_reference_detections(monkeypatch):
    model = build_model(_cfg("cornernet_saccade.bccd.yaml", "MODEL.CORNERNET.SACCADE.ATT_MAX_CROPS", "1")).eval()
    fake = _HandMadeSaccade(model)
    monkeypatch.setattr(model, "_run_inputs", fake)
    _, _, _, info = model.saccade_inference(torch.zeros(3, 480, 640, dtype=torch.uint8))
    assert info["num_crops"] == 1 and fake.calls[1].shape[0] == 1
    assert info["locations"][0, 3] == pytest.approx(0.6)
    # With REF_DETS a detection above 0.5 becomes a crop of score 1 that comes first.
    class Confident(_HandMadeSaccade):
        def __call__(self, crops, with_attention):
            dets, atts = super().__call__(crops, with_attention)
            dets["scores"] = torch.tensor([[0.9, -1.0]]).expand(crops.shape[0], 2).clone()
            return dets, atts
    model2 = build_model(_cfg()).eval()
    fake2 = Confident(model2)
    monkeypatch.setattr(model2, "_run_inputs", fake2)
    _, _, _, info = model2.saccade_inference(torch.zeros(3, 480, 640, dtype=torch.uint8))
    assert info["locations"][0, 3] == 1.0
    # the box of the 255 input, 50 x 30 input px, is 50 / (255 / 640) = 125.5 px wide: > 96 -> zoom 192 / 125.5
    z = float(torch.tensor(255 / 640, dtype=torch.float32))
    ref_zooms = info["locations"][info["locations"][:, 3] == 1, 2].tolist()
    assert any(abs(v - 192 / (50 / z)) < 1e-5 for v in ref_zooms), ref_zooms


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_and_decoding_stay_float32_under_autocast(dtype):
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    inst = Instances((255, 255))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 140.0], [150.0, 30.0, 250.0, 90.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    inst.gt_ignore = torch.tensor([False, True])
    batch = [{"image": torch.rand(3, 255, 255) * 255, "instances": inst}]
    ref = model(batch)
    with torch.autocast("cpu", dtype=dtype):
        amp = model(batch)
    for k, v in amp.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), (k, v)
        # losses are float32 of low-precision head outputs: bfloat16's 8-bit mantissa moves the
        # small offset term by ~3.5 % (float16: < 1 %)
        rtol = 5e-2 if dtype == torch.bfloat16 else 1e-2
        assert abs(v.item() - ref[k].item()) <= rtol * abs(ref[k].item()) + 1e-3, (dtype, k, v.item(), ref[k].item())
    model.eval()
    image = (torch.rand(3, 120, 160) * 255).to(torch.uint8)
    with torch.autocast("cpu", dtype=dtype):
        crops = crop_and_resize(image.float(), torch.tensor([[60.0, 80.0, 0.8]]), (127, 127))[0]
        dets, atts = model._run_inputs((crops - model.pixel_mean) / model.pixel_std, True)
    assert dets["boxes"].dtype == torch.float32 and all(a.dtype == torch.float32 for a in atts)


def test_a_second_saccade_round_follows_the_crops_attention(monkeypatch):
    # Two rounds ([CNL] att_thresholds of length 2): the crops of round 1 give the next crops with
    # ignore_same (only zooms > 1), their own zoom <= MAX_SOURCE_SCALE and a new zoom <= MAX_CROP_SCALE.
    model = build_model(_cfg("cornernet_saccade.bccd.yaml", "MODEL.CORNERNET.SACCADE.ATT_THRESHOLDS", "(0.3, 0.3)",
                             "MODEL.CORNERNET.SACCADE.ATT_SCALES", "((1, 2, 4), (1, 2, 4))")).eval()
    fake = _HandMadeSaccade(model)
    monkeypatch.setattr(model, "_run_inputs", fake)
    _, _, _, info = model.saccade_inference(torch.zeros(3, 480, 640, dtype=torch.uint8))
    assert [c.shape[0] for c in fake.calls] == [2, 2, 1]
    s32 = float(torch.tensor(255 / 640, dtype=torch.float32))
    first = info["locations"][:2]
    np.testing.assert_allclose(first[:, 2].numpy(), [2 * s32, 4 * s32], rtol=1e-6)
    # Round-1 crop 1 (zoom 4 s = 1.59 <= 2) attends its medium cell (20, 12): zoom 2 x 1.59 = 3.19;
    # its small cell would need zoom 6.4 > 4; crop 0's small cell is below the threshold.
    y1, x1, z1 = first[1, :3].tolist()
    off_y, off_x = int(y1) - int(255 / z1) // 2, int(x1) - int(255 / z1) // 2
    np.testing.assert_allclose(info["locations"][2].numpy(), [20 * 8 / z1 + off_y, 12 * 8 / z1 + off_x, 2 * z1, 0.6],
                               rtol=1e-6)
    assert info["num_crops"] == 3


@pytest.mark.parametrize("opts, key", [
    (["MODEL.CORNERNET.FLIP_TEST", "True"], "FLIP_TEST"),
    (["MODEL.HOURGLASS.OUT_MERGES", "False"], "OUT_MERGES"),
    (["MODEL.CORNERNET.SACCADE.ATT_RANGES", "((96, 256), (32, 96))"], "ATT_RANGES"),
    (["MODEL.CORNERNET.SACCADE.ATT_THRESHOLDS", "(0.3, 0.3)"], "ATT_SCALES"),
])
def test_bad_saccade_config_names_the_key(opts, key):
    with pytest.raises(ValueError, match=key):
        build_model(_cfg("cornernet_saccade.bccd.yaml", *opts))
