"""CenterNet unit tests: decoding, soft-NMS, augmentation transforms, backbones and the detector."""
import math

import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.data import transforms as T
from common.modeling import build_model
from common.structures import Boxes, Instances
from projects.CenterNet.centernet import add_centernet_config, centernet_decode, heatmap_peaks, soft_nms_gaussian


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


def test_soft_nms_gaussian_decay_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    classes = torch.tensor([0, 0, 1])
    keep, new_scores = soft_nms_gaussian(boxes, scores, classes, sigma=0.5, score_thresh=0.001)
    # Box 1 overlaps box 0 with IoU 0.5 (same class): 0.8 * exp(-0.25 / 0.5); box 2 is another class.
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.5)]))


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
