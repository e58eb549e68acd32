"""CenterNet unit tests: decoding, soft-NMS, augmentation transforms, backbones and the detector."""
import math

import cv2

import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.data import transforms as T
from common.modeling import build_model
from common.structures import Boxes, Instances
from projects.CenterNet.centernet import add_centernet_config, centernet_decode, heatmap_peaks


def test_decode_hand_made_maps():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 1, 2, 3] = 0.9  # peak of class 1 at (x=3, y=2)
    heat[0, 1, 2, 4] = 0.5  # neighbour of the peak: suppressed by the 3x3 max-pool
    heat[0, 0, 6, 5] = 0.7  # peak of class 0 at (x=5, y=6)
    wh = torch.zeros(1, 2, 8, 8)
    wh[0, :, 2, 3] = torch.tensor([4.0, 2.0])
    wh[0, :, 6, 5] = torch.tensor([2.0, 6.0])
    reg = torch.zeros(1, 2, 8, 8)
    reg[0, :, 2, 3] = torch.tensor([0.5, 0.25])
    boxes, scores, classes = centernet_decode(heat, wh, reg, k=3)
    torch.testing.assert_close(scores[0], torch.tensor([0.9, 0.7, 0.0]))
    torch.testing.assert_close(classes[0, :2], torch.tensor([1, 0]))
    # centre + offset -/+ size / 2, in output-map pixels.
    torch.testing.assert_close(boxes[0, 0], torch.tensor([1.5, 1.25, 5.5, 3.25]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([4.0, 3.0, 6.0, 9.0]))
    assert heatmap_peaks(heat)[0, 1, 2, 4] == 0


def test_affine_transform_moves_boxes_with_the_image():
    img = np.zeros((40, 60, 3), np.uint8)
    img[10:20, 30:40] = 255
    tfm = T.AffineTransform(T.center_scale_affine_matrix((30, 20), 60, (30, 30)), 30, 30)
    out = tfm.apply_image(img)
    assert out.shape == (30, 30, 3)
    box = tfm.apply_box(np.array([[30.0, 10.0, 40.0, 20.0]]))[0]
    # scale 0.5, translation (15 - 15, 15 - 10) = (0, 5)
    np.testing.assert_allclose(box, [15.0, 10.0, 20.0, 15.0])
    assert out[11:14, 16:19].min() > 200 and out[:5].max() == 0


def test_color_jitter_lighting_is_deterministic_and_keeps_boxes():
    aug = T.ColorJitterLighting([0.2, 0.02, 0.003], np.eye(3), 0.4, 0.1, "BGR")
    np.random.seed(0)
    img = np.random.randint(0, 255, (8, 8, 3)).astype(np.uint8)
    tfm = aug.get_transform(img)
    a, b = tfm.apply_image(img), tfm.apply_image(img)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    np.testing.assert_array_equal(tfm.apply_box(np.array([[1.0, 2.0, 3.0, 4.0]])), [[1.0, 2.0, 3.0, 4.0]])
    brightness = T.ColorJitterLightingTransform([0], [1.5, 1.0, 1.0], np.zeros(3))
    np.testing.assert_allclose(brightness.apply_image(img), img.astype(np.float32) * 1.5)


def _tiny_cfg(backbone: str):
    cfg = get_cfg()
    add_centernet_config(cfg)
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "CenterNet", "MODEL.DEVICE", "cpu",
                         "MODEL.CENTERNET.NUM_CLASSES", "3", "MODEL.RESNETS.DEPTH", "18",
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN",
                         "MODEL.BACKBONE.FREEZE_AT", "0"])
    if backbone == "resdcn":
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_deconv_backbone",
                             "MODEL.RESNET_DECONV.CHANNELS", "[32, 16, 16]", "MODEL.CENTERNET.HEAD_CONV", "8"])
    elif backbone == "dla":
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_dla_backbone", "MODEL.CENTERNET.IN_FEATURES", "['dla']",
                             "MODEL.CENTERNET.HEAD_CONV", "8"])
    else:
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_hourglass_backbone",
                             "MODEL.CENTERNET.IN_FEATURES", "['hg0', 'hg1']", "MODEL.CENTERNET.HEAD_CONV", "8",
                             "MODEL.HOURGLASS.DIMS", "[8, 8, 16]", "MODEL.HOURGLASS.MODULES", "[1, 1, 1]",
                             "MODEL.HOURGLASS.PRE_CHANNELS", "8", "MODEL.HOURGLASS.CNV_DIM", "8"])
    return cfg


@pytest.mark.parametrize("backbone", ["resdcn", "dla", "hourglass"])
def test_detector_trains_with_and_without_boxes_and_predicts(backbone):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(backbone))
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 8.0, 30.0, 40.0]]))
    inst.gt_classes = torch.tensor([2])
    empty = Instances((64, 64))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    batch = [{"image": torch.rand(3, 64, 64) * 255, "instances": inst},
             {"image": torch.rand(3, 64, 64) * 255, "instances": empty}]
    losses = model(batch)
    assert set(losses) == {"loss_hm", "loss_wh", "loss_off"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    out = model([{"image": torch.rand(3, 50, 60) * 255, "height": 100, "width": 120}])
    assert out[0]["instances"].image_size == (100, 120)
    assert len(out[0]["instances"]) <= 100


def test_inference_maps_boxes_back_through_centred_padding():
    """A model whose heads are set by hand: the decoded box must land where the maps say."""
    model = build_model(_tiny_cfg("resdcn"))
    model.eval()
    head = model.heads[-1]

    class FixedHead(torch.nn.Module):
        def forward(self, x):
            n, _, h, w = x.shape
            hm = torch.full((n, 3, h, w), -10.0)
            hm[:, 1, 5, 6] = 5.0  # class 1 at output cell (x=6, y=5)
            wh = torch.zeros(n, 2, h, w)
            wh[:, :, 5, 6] = torch.tensor([4.0, 2.0])
            return {"hm": hm, "wh": wh, "reg": torch.zeros(n, 2, h, w)}

    model.heads[-1] = FixedHead()
    # 50x40 image -> padded to (50 | 31) + 1 = 64 by (40 | 31) + 1 = 64, centred: offset (7, 12).
    out = model([{"image": torch.zeros(3, 50, 40), "height": 100, "width": 80}])[0]["instances"]
    box = out.pred_boxes.tensor[0]
    expected = (torch.tensor([6 - 2, 5 - 1, 6 + 2, 5 + 1]) * 4.0 - torch.tensor([12, 7, 12, 7])) * 2.0
    torch.testing.assert_close(box, expected.float())
    assert out.pred_classes[0] == 1
    model.heads[-1] = head


# ---------------------------------------------------------------------------------------------
# Fidelity to xingyizhou/CenterNet (test input geometry, unclipped boxes, soft-NMS keys, training
# annotations, initialisation, mixed precision).


def _coco_cfg(name="ctdet_coco_resdcn18.yaml"):
    cfg = get_cfg()
    add_centernet_config(cfg)
    cfg.merge_from_file(f"projects/CenterNet/configs/{name}")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def test_keep_res_padding_centres_a_427x640_image_like_the_authors():
    # base_detector.py pre_process: input (427 | 31) + 1 = 448 by (640 | 31) + 1 = 672, image centre
    # (640 // 2, 427 // 2) on the input centre (336, 224): top 224 - 213 = 11, left 336 - 320 = 16.
    (nh, nw), m, (ih, iw) = T.centernet_aug.centernet_test_affine(427, 640)
    assert (nh, nw, ih, iw) == (427, 640, 448, 672)
    np.testing.assert_array_equal(m, [[1, 0, 16], [0, 1, 11]])
    model = build_model(_tiny_cfg("resdcn"))
    batch, offsets = model._batch([torch.zeros(3, 427, 640, dtype=torch.uint8)], centered=True)
    assert tuple(batch.shape[-2:]) == (448, 672) and offsets == [(11, 16)]
    # Hourglass pads to | 127: (427 | 127) + 1 = 512, top 256 - 213 = 43.
    (_, _), m, (ih, iw) = T.centernet_aug.centernet_test_affine(427, 640, pad=127)
    assert (ih, iw) == (512, 768) and m[1, 2] == 43 and m[0, 2] == 64


class _FixedHead(torch.nn.Module):
    """Heads set by hand: class 1 at output cell (x=1, y=1) with size (w, h) = (6, 4)."""

    def forward(self, x):
        n, _, h, w = x.shape
        hm = torch.full((n, 3, h, w), -10.0)
        hm[:, 1, 1, 1] = 5.0
        wh = torch.zeros(n, 2, h, w)
        wh[:, :, 1, 1] = torch.tensor([6.0, 4.0])
        return {"hm": hm, "wh": wh, "reg": torch.zeros(n, 2, h, w)}


def test_boxes_are_not_clipped_as_the_authors_unless_clip_boxes():
    # 50x50 image padded centred to 64x64 (offset 32 - 25 = 7): box (1 -/+ 3, 1 -/+ 2) * 4 - 7.
    cfg = _tiny_cfg("resdcn")
    assert cfg.MODEL.CENTERNET.CLIP_BOXES is False
    model = build_model(cfg).eval()
    model.heads[-1] = _FixedHead()
    inputs = [{"image": torch.zeros(3, 50, 50, dtype=torch.uint8)}]
    box = model(inputs)[0]["instances"].pred_boxes.tensor[0]
    torch.testing.assert_close(box, torch.tensor([-15.0, -11.0, 9.0, 5.0]))
    assert len(model(inputs)[0]["instances"]) == 100  # none dropped, empty boxes included
    model.clip_boxes = True
    out = model(inputs)[0]["instances"]
    torch.testing.assert_close(out.pred_boxes.tensor[0], torch.tensor([0.0, 0.0, 9.0, 5.0]))
    assert 1 <= len(out) <= 3 and out.pred_boxes.nonempty().all()  # zero-size boxes of the other cells dropped


def test_bccd_config_clips_and_coco_configs_use_the_plus_one_soft_nms():
    cfg = get_cfg()
    add_centernet_config(cfg)
    cfg.merge_from_file("projects/CenterNet/configs/centernet.bccd.res18.yaml")
    assert cfg.MODEL.CENTERNET.CLIP_BOXES is True
    c = _coco_cfg().MODEL.CENTERNET
    assert (c.CLIP_BOXES, c.SOFT_NMS_PLUS_ONE, c.SOFT_NMS_METHOD, c.SOFT_NMS_SIGMA) == (False, True, "gaussian", 0.5)
    model = build_model(_tiny_cfg("resdcn"))
    assert model.soft_nms_kwargs["plus_one"] is True


def test_test_scale_resizes_the_uint8_image_with_cv2():
    model = build_model(_tiny_cfg("resdcn"))
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (50, 61, 3)).astype(np.uint8)
    batch, affines = model._test_batch([torch.from_numpy(img).permute(2, 0, 1)], 0.5)
    # int(50 * 0.5) x int(61 * 0.5) = 25 x 30, padded to 32 x 32 centred: top 16 - 12, left 16 - 15.
    assert tuple(batch.shape[-2:]) == (32, 32) and affines == [(1.0, 1.0, 4.0)]
    expected = cv2.resize(img, (30, 25)).astype(np.float32)  # what the authors feed (uint8 result)
    pixels = batch[0, :, 4:29, 1:31] * model.pixel_std + model.pixel_mean
    np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy(), expected, atol=2e-3)


def test_fix_res_input_is_the_authors_affine_warp_and_maps_boxes_back():
    cfg = _tiny_cfg("resdcn")
    cfg.MODEL.CENTERNET.TEST_INPUT_SIZE = (64, 64)
    model = build_model(cfg).eval()
    rng = np.random.RandomState(1)
    img = rng.randint(0, 256, (40, 50, 3)).astype(np.uint8)
    batch, affines = model._test_batch([torch.from_numpy(img).permute(2, 0, 1)], 1.0)
    # get_affine_transform(c=(25, 20), s=max(40, 50), 0, (64, 64)): scale 64/50, centre -> (32, 32).
    k = 64 / 50
    m = np.array([[k, 0, 32 - 25 * k], [0, k, 32 - 20 * k]])
    expected = cv2.warpAffine(img, m, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float32)
    pixels = (batch[0] * model.pixel_std + model.pixel_mean).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(pixels, expected, atol=2e-3)
    np.testing.assert_allclose(affines[0], (k, 32 - 25 * k, 32 - 20 * k))
    model.heads[-1] = _FixedHead()
    box = model([{"image": torch.from_numpy(img).permute(2, 0, 1)}])[0]["instances"].pred_boxes.tensor[0]
    expected_box = (torch.tensor([-8.0, -4.0, 16.0, 12.0]) - torch.tensor([32 - 25 * k, 32 - 20 * k] * 2)) / k
    torch.testing.assert_close(box, expected_box.float())


def test_train_mapper_keeps_crowd_boxes_and_the_first_128_objects(tmp_path):
    from projects.CenterNet.centernet import CenterNetDatasetMapper

    cv2.imwrite(str(tmp_path / "img.png"), np.full((64, 64, 3), 128, np.uint8))
    annos = [{"bbox": [28.0, 28.0, 8.0, 8.0], "bbox_mode": 1, "category_id": 0, "iscrowd": 1}]
    annos += [{"bbox": [28.0 + i % 3, 28.0, 6.0, 6.0], "bbox_mode": 1, "category_id": 1, "iscrowd": 0}
              for i in range(140)]
    record = {"file_name": str(tmp_path / "img.png"), "height": 64, "width": 64, "image_id": 1, "annotations": annos}
    cfg = _tiny_cfg("resdcn")
    cfg.merge_from_list(["INPUT.CENTERNET.TRAIN_SIZE", "(64, 64)", "INPUT.CENTERNET.SCALES", "(1.0,)"])
    inst = CenterNetDatasetMapper(cfg, is_train=True)(record)["instances"]
    assert len(inst) == 128 and inst.gt_classes[0] == 0 and (inst.gt_classes[1:] == 1).all()
    cfg.merge_from_list(["INPUT.CENTERNET.KEEP_CROWD", "False", "INPUT.CENTERNET.MAX_OBJECTS", "0"])
    inst = CenterNetDatasetMapper(cfg, is_train=True)(record)["instances"]
    assert len(inst) == 140 and (inst.gt_classes == 1).all()


def test_initialisation_follows_the_authors_networks():
    torch.manual_seed(0)
    model = build_model(_coco_cfg())  # resdcn18: DCNv2 + resnet_dcn heads
    dcn = model.backbone.deconv[0].dcn
    bound = 1 / math.sqrt(512 * 9)  # DCNv2 reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = dcn.dcn.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound and w.std() > 0.9 * bound / math.sqrt(3)
    assert dcn.dcn.bias.abs().max() == 0 and dcn.conv_offset.weight.abs().max() == 0
    up = model.backbone.deconv[0].up_sample.weight  # fill_up_weights: w[:, 0] = bilinear 4x4 kernel
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(up[:, 0], (k1[:, None] * k1[None, :]).expand(256, 4, 4))
    head = model.heads[0]
    for conv in (head.wh[0], head.wh[2], head.reg[0], head.reg[2]):
        assert abs(float(conv.weight.detach().std()) - 0.001) < 2e-4 and conv.bias.abs().max() == 0
    assert torch.all(head.hm[2].bias == -2.19)
    # msra_resnet (plain res18): only the last wh/reg conv N(0, 0.001); the 3x3 keeps PyTorch's init.
    head = build_model(_coco_cfg("ctdet_coco_res18.yaml")).heads[0]
    assert abs(float(head.wh[2].weight.detach().std()) - 0.001) < 3e-4 and float(head.wh[0].weight.detach().std()) > 0.005
    assert head.wh[0].bias.abs().max() > 0
    # pose_dla_dcn: default weights, zero biases; large_hourglass: PyTorch default.
    from projects.CenterNet.centernet import CenterNetHead
    dla = CenterNetHead(64, 3, 16, init="pose_dla_dcn")
    assert float(dla.reg[0].weight.detach().std()) > 0.01 and dla.reg[0].bias.abs().max() == 0 and dla.reg[2].bias.abs().max() == 0
    hg = CenterNetHead(64, 3, 16, init="large_hourglass")
    assert hg.reg[2].bias.abs().max() > 0 and torch.all(hg.hm[2].bias == -2.19)


def _amp_batch():
    g = torch.Generator().manual_seed(1)
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 8.0, 30.0, 40.0], [30.0, 30.0, 60.0, 50.0]]))
    inst.gt_classes = torch.tensor([2, 0])
    empty = Instances((64, 64))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    return [{"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": inst},
            {"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": empty}]


def test_trains_two_steps_under_bfloat16_autocast_close_to_float32():
    """Tiny ResNet-18 + DCN: 2 Adam steps under CPU autocast bfloat16 vs float32 from the same
    weights. Losses are float32 (computed with autocast off); tolerance: relative 2e-2 at step 1,
    5e-2 at step 2 (bfloat16 convolutions, ~3 significant digits), measured 0.3% / 2.6%."""
    import copy

    torch.manual_seed(0)
    ref = build_model(_tiny_cfg("resdcn"))
    runs = {}
    for name, model in (("fp32", ref), ("bf16", copy.deepcopy(ref))):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        runs[name] = []
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                losses = model(_amp_batch())
            assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            runs[name].append({k: float(v) for k, v in losses.items()})
    for step, rtol in ((0, 2e-2), (1, 5e-2)):
        for k, v in runs["fp32"][step].items():
            assert abs(runs["bf16"][step][k] - v) <= rtol * abs(v) + 1e-3, (step, k, runs["bf16"][step][k], v)
    # Decoding under autocast stays float32 and equals the float32 decoding of the same maps.
    ref.eval()
    image = [{"image": torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255}]
    out32 = ref(image)[0]["instances"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = ref(image)[0]["instances"]
    assert out16.pred_boxes.tensor.dtype == torch.float32 and out16.scores.dtype == torch.float32
    assert torch.isfinite(out16.pred_boxes.tensor).all()
