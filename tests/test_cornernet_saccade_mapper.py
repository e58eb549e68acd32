"""CornerNet-Saccade training crop and mapper (projects/CornerNet/cornernet/saccade_mapper.py):
hand-computed crops (scale, window, boxes, pixels), a literal re-derivation of the authors'
sampler (princeton-vl/CornerNet-Lite core/sample/cornernet_saccade.py) over many seeds, the
visible-fraction / min-scale rule at its boundaries, the reference-object zoom ranges, empty
images and one real BCCD image."""
import cv2
import numpy as np
import pytest
import torch

from common.config import get_cfg
from common.structures import BoxMode
from projects.CornerNet.cornernet import add_cornernet_config
from projects.CornerNet.cornernet.saccade_mapper import (
    CornerNetSaccadeDatasetMapper,
    SaccadeCropTransform,
    SaccadeRandomCrop,
    build_saccade_augmentation,
    clip_boxes_inclusive,
    saccade_positive_mask,
)

SACCADE_SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _cfg(flip="none", color=False):
    cfg = get_cfg()
    add_cornernet_config(cfg)
    cfg.INPUT.CORNERNET.TRAIN_SIZE = (255, 255)
    cfg.INPUT.CORNERNET.SCALES = SACCADE_SCALES
    cfg.INPUT.CORNERNET.COLOR_AUG = color
    cfg.INPUT.RANDOM_FLIP = flip
    return cfg


def _write(tmp_path, image, name="im.png"):
    path = tmp_path / name
    cv2.imwrite(str(path), image)  # PNG: lossless, the mapper reads the same BGR pixels
    return str(path)


def _dict(file_name, image, boxes_xyxy, classes=None):
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    classes = [0] * len(boxes) if classes is None else classes
    annos = [{"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
             for b, c in zip(boxes, classes)]
    return {"file_name": file_name, "height": image.shape[0], "width": image.shape[1], "image_id": 1,
            "annotations": annos}


# ---------------------------------------------------------------------------------------------
def test_hand_computed_crop_of_a_small_image(tmp_path):
    """100x80 image, one 40x40 object: its max side 40 is in (32, 96] -> scale randint(32, 97) / 40;
    the resized image is smaller than 255 on both axes, so the window is centred on it."""
    img = np.zeros((80, 100, 3), np.uint8)
    img[10:50, 20:60] = (0, 0, 255)  # red in BGR
    mapper = CornerNetSaccadeDatasetMapper(_cfg(), is_train=True)
    np.random.seed(0)
    out = mapper(_dict(_write(tmp_path, img), img, [[20, 10, 60, 50]], [2]))
    # The same draws: ref index randint(1), then randint(32, 97), then the centring coin.
    rs = np.random.RandomState(0)
    assert rs.randint(1) == 0
    s = rs.randint(32, 97)
    assert s == 76  # legacy RandomState(0) stream
    scale = s / 40.0
    new_w, new_h = int(100 * scale), int(80 * scale)
    assert (new_w, new_h) == (190, 152)
    off_x, off_y = new_w // 2 - 127, new_h // 2 - 127  # -32, -51
    expected = np.array([20 * scale - off_x, 10 * scale - off_y, 60 * scale - off_x, 50 * scale - off_y])
    np.testing.assert_allclose(expected, [70.0, 70.0, 146.0, 146.0])
    inst = out["instances"]
    assert out["image"].shape == (3, 255, 255) and out["image"].dtype == torch.uint8
    assert inst.image_size == (255, 255)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), expected[None], atol=1e-4)
    assert inst.gt_classes.tolist() == [2] and inst.gt_classes.dtype == torch.int64
    assert inst.gt_ignore.tolist() == [False]  # fully visible, max side 76 >= 16
    canvas = out["image"].permute(1, 2, 0).numpy()
    # Content: columns [127 - 95, 127 + 95) = [32, 222) (xc = 190 // 2), rows [127 - 76, 127 + 76) = [51, 203).
    expected_canvas = np.zeros((255, 255, 3), np.uint8)
    expected_canvas[51:203, 32:222] = cv2.resize(img, (190, 152))
    np.testing.assert_array_equal(canvas, expected_canvas)
    assert (canvas[71:145, 71:145] == (0, 0, 255)).all()  # the rectangle's interior
    assert (canvas[53:68, 33:68] == 0).all() and (canvas[:51] == 0).all()  # black image content outside it


def test_transform_maps_pixels_and_coords_alike():
    """A zoom-x2 crop: pixel (x, y) of the source lands at (2x - off_x, 2y - off_y)."""
    img = np.zeros((200, 300, 3), np.uint8)
    img[60:70, 100:110] = 255
    t = SaccadeCropTransform(200, 300, 2.0, center=(250, 150), window=(255, 255), output_size=(255, 255))
    assert (t.offset_x, t.offset_y) == (123, 23)
    # window x [250 - 127, 250 + 127) = [123, 377), y [23, 277) of the 600x400 resized image
    assert t.border == (0, 254, 0, 254)
    out = t.apply_image(img)
    np.testing.assert_allclose(t.apply_box(np.array([[100.0, 60.0, 110.0, 70.0]])), [[77.0, 97.0, 97.0, 117.0]])
    assert (out[98:116, 78:96] == 255).all() and out[:96].max() == 0 and out[:, :76].max() == 0  # bilinear: 1 px blur
    assert out[254].max() == 0 and out[:, 254].max() == 0  # the authors' window is 254 px wide


# ---------------------------------------------------------------------------------------------
def _authors_sample(image, dets, input_size=(255, 255), rand_center=True, scales=SACCADE_SCALES):
    """A literal re-derivation of CornerNet-Lite's per-image sampling (ref_scale, resize,
    crop_image_dets, crop_image, clip_detections, bbox_overlaps > 0.5 and det_max >= 16), without
    the flip. Returns (scale, image, boxes, positive, border)."""
    orig = dets.copy()
    h, w = image.shape[:2]
    d = dets.copy()
    d[:, 0:4:2] = np.clip(d[:, 0:4:2], 0, w - 1)
    d[:, 1:4:2] = np.clip(d[:, 1:4:2], 0, h - 1)
    keep = np.where((d[:, 2] - d[:, 0] > 0) & (d[:, 3] - d[:, 1] > 0))[0]
    d, orig = d[keep], orig[keep]
    if d.shape[0] == 0:
        scale, ind = np.random.choice(scales), None
    else:
        ind = np.random.randint(d.shape[0])
        hw = max(d[ind, 3] - d[ind, 1], d[ind, 2] - d[ind, 0])
        if hw > 96:
            scale = np.random.randint(96, 255) / hw
        elif hw > 32:
            scale = np.random.randint(32, 97) / hw
        else:
            scale = np.random.randint(16, 33) / hw
    orig = orig * scale
    image = cv2.resize(image, (int(w * scale), int(h * scale)))
    d = d * scale
    ih, iw = image.shape[:2]
    centered = rand_center and np.random.uniform() > 0.5
    centre = []
    for size, win, (a0, a1) in ((iw, input_size[1], (0, 2)), (ih, input_size[0], (1, 3))):
        if size <= win:
            c = size // 2
        elif ind is None or not centered:
            lo = max(d[ind, a1] - win, 0) if ind is not None else 0
            hi = min(size - win, d[ind, a0]) if ind is not None else size - win
            c = np.random.randint(int(lo), int(hi) + 1) + win // 2
        else:
            lo = max((d[ind, a0] + d[ind, a1]) // 2 - np.random.randint(0, 15), 0)
            hi = min((d[ind, a0] + d[ind, a1]) // 2 + np.random.randint(0, 15), size - 1)
            c = np.random.randint(int(lo), int(hi) + 1)
        centre.append(c)
    ctx, cty = centre
    oh, ow = input_size
    canvas = np.zeros((oh, ow, 3), image.dtype)
    x0, x1 = max(0, ctx - ow // 2), min(ctx + ow // 2, iw)
    y0, y1 = max(0, cty - oh // 2), min(cty + oh // 2, ih)
    l, r, t, b = ctx - x0, x1 - ctx, cty - y0, y1 - cty
    canvas[oh // 2 - t:oh // 2 + b, ow // 2 - l:ow // 2 + r] = image[y0:y1, x0:x1]
    by0, by1, bx0, bx1 = oh // 2 - t, oh // 2 + b, ow // 2 - l, ow // 2 + r
    d[:, 0:4:2] -= ctx - ow // 2
    d[:, 1:4:2] -= cty - oh // 2
    d[:, 0:4:2] = np.clip(d[:, 0:4:2], bx0, bx1 - 1)
    d[:, 1:4:2] = np.clip(d[:, 1:4:2], by0, by1 - 1)
    keep = np.where((d[:, 2] - d[:, 0] > 0) & (d[:, 3] - d[:, 1] > 0))[0]
    d, orig = d[keep], orig[keep]
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    overlap = area(d) / area(orig) > 0.5
    valid = np.array([max(int(y2) - int(y1_), int(x2) - int(x1_)) >= 16 for x1_, y1_, x2, y2 in d], bool)
    return scale, canvas, d, overlap & valid, (by0, by1, bx0, bx1)


@pytest.mark.parametrize("rand_center", [True, False])
def test_transform_equals_the_authors_sampler_over_seeds(tmp_path, rand_center):
    cfg = _cfg()
    cfg.INPUT.CORNERNET.SACCADE.RAND_CENTER = rand_center
    mapper = CornerNetSaccadeDatasetMapper(cfg, is_train=True)
    gen = np.random.RandomState(123)
    branches = set()
    for seed in range(40):
        h, w = gen.randint(60, 400), gen.randint(60, 400)
        img = gen.randint(0, 256, (h, w, 3)).astype(np.uint8)
        n = gen.randint(0, 5)
        x0, y0 = gen.uniform(-20, w - 10, n), gen.uniform(-20, h - 10, n)
        boxes = np.stack([x0, y0, x0 + gen.uniform(4, 250, n), y0 + gen.uniform(4, 250, n)], 1)
        path = _write(tmp_path, img, f"im{seed}.png")
        np.random.seed(seed)
        out = mapper(_dict(path, img, boxes))
        np.random.seed(seed)
        scale, canvas, dets, positive, border = _authors_sample(img, boxes.copy(), rand_center=rand_center)
        inst = out["instances"]
        np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), canvas)
        np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), dets.reshape(-1, 4), atol=1e-3)
        np.testing.assert_array_equal(inst.gt_ignore.numpy(), ~positive)
        branches.add((n > 0, int(w * scale) > 255, bool(positive.all())))
    assert len(branches) >= 4  # with / without objects, larger / smaller than the window, ignored objects


# ---------------------------------------------------------------------------------------------
def test_positive_mask_boundaries():
    ref = np.full(6, 100.0 * 40.0)
    boxes = np.array([
        [0, 0, 50, 40],  # exactly 0.5 visible -> ignored (the rule is > 0.5)
        [0, 0, 50.001, 40],  # just above -> positive
        [0, 0, 70, 40],  # 70 % -> positive
        [0, 0, 100, 40],  # fully visible
        [0.9, 0, 16.8, 15],  # int widths: 16 - 0 = 16 >= 16 (true width 15.9) -> size ok
        [1.1, 0, 16.9, 15],  # 16 - 1 = 15 < 16 (true width 15.8) -> ignored
    ])
    ref[4:] = (boxes[4:, 2] - boxes[4:, 0]) * 15.0  # these two are fully visible
    np.testing.assert_array_equal(saccade_positive_mask(boxes, ref), [False, True, True, True, True, False])
    assert saccade_positive_mask(np.zeros((0, 4)), np.zeros(0)).shape == (0,)


def test_mapper_visible_fraction_and_tiny_objects(tmp_path):
    """A fixed crop: scale 1, window centred at (127, 127) of a 400x300 image; the content
    border is [0, 254) x [0, 254), boxes are clipped to [0, 253]."""
    img = np.full((300, 400, 3), 50, np.uint8)
    crop = SaccadeCropTransform(300, 400, 1.0, center=(127, 127), window=(255, 255), output_size=(255, 255))
    mapper = CornerNetSaccadeDatasetMapper(is_train=True, augmentations=[crop], image_format="BGR",
                                           min_visible=0.5, min_scale=16)
    boxes = [
        [203, 10, 303, 50],  # x clipped to [203, 253]: 50 / 100 visible -> ignored
        [183, 60, 283, 100],  # [183, 253]: 70 % -> positive
        [10, 200, 25, 215],  # max side 15 < 16 -> ignored
        [300, 10, 390, 50],  # outside the window -> dropped
        [-60, 120, 40, 160],  # annotated box half outside the image: 40 / 100 of it visible -> ignored
        [30, 120, 90, 180],  # inside -> positive
    ]
    out = mapper(_dict(_write(tmp_path, img), img, boxes, [0, 1, 2, 0, 1, 2]))
    inst = out["instances"]
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[203, 10, 253, 50], [183, 60, 253, 100],
                                                              [10, 200, 25, 215], [0, 120, 40, 160],
                                                              [30, 120, 90, 180]])
    assert inst.gt_classes.tolist() == [0, 1, 2, 1, 2]
    assert inst.gt_ignore.tolist() == [True, False, True, True, False]
    assert inst.gt_ignore.dtype == torch.bool
    assert out["image"][:, 254].max() == 0 and out["image"][:, :254, :254].min() == 50


def test_crowd_and_max_objects_rules(tmp_path):
    img = np.full((300, 400, 3), 50, np.uint8)
    crop = SaccadeCropTransform(300, 400, 1.0, center=(127, 127), window=(255, 255), output_size=(255, 255))
    d = _dict(_write(tmp_path, img), img, [[10, 10, 60, 60], [70, 10, 120, 60], [130, 10, 180, 60]], [0, 1, 2])
    d["annotations"][0]["iscrowd"] = 1
    kw = dict(is_train=True, augmentations=[crop], image_format="BGR")
    assert CornerNetSaccadeDatasetMapper(**kw)(d)["instances"].gt_classes.tolist() == [0, 1, 2]  # crowd kept
    assert CornerNetSaccadeDatasetMapper(keep_crowd=False, **kw)(d)["instances"].gt_classes.tolist() == [1, 2]
    assert CornerNetSaccadeDatasetMapper(max_objects=2, **kw)(d)["instances"].gt_classes.tolist() == [0, 1]
    assert d["annotations"][0]["iscrowd"] == 1 and len(d["annotations"]) == 3  # input dict untouched


def test_clip_before_flip_and_flip_keeps_the_rule(tmp_path):
    """With the flip the boxes are clipped to the border first, then mirrored as x' = 255 - x."""
    img = np.full((300, 400, 3), 50, np.uint8)
    crop = SaccadeCropTransform(300, 400, 1.0, center=(127, 127), window=(255, 255), output_size=(255, 255))
    from common.data.transforms import HFlipTransform
    mapper = CornerNetSaccadeDatasetMapper(is_train=True, augmentations=[crop, HFlipTransform(255)],
                                           image_format="BGR")
    out = mapper(_dict(_write(tmp_path, img), img, [[183, 60, 283, 100], [1.1, 0, 16.9, 15]]))
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), [[2, 60, 72, 100], [238.1, 0, 253.9, 15]],
                               atol=1e-4)
    # int widths after the flip: 253 - 238 = 15 (the authors' W - x - 1 flip: 252 - 237 = 15)
    assert out["instances"].gt_ignore.tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side,low,high", [(200, 96, 255), (50, 32, 97), (20, 16, 33)])
def test_reference_object_zoom_and_window(side, low, high):
    aug = SaccadeRandomCrop((255, 255), rand_center=False)
    img = np.zeros((400, 500, 3), np.uint8)
    box = np.array([[150.0, 100.0, 150.0 + side, 100.0 + side * 0.6]])
    sides, n_random = [], 0
    for seed in range(300):
        np.random.seed(seed)
        t = aug.get_transform(img, box)
        b = t.apply_box(box)[0]
        sides.append(max(b[2] - b[0], b[3] - b[1]))
        if t.new_w > 255 and t.new_h > 255:  # the window is random: it contains the reference,
            # up to the authors' int() of randint's low end (x1 - 255 truncated: < 1 px more)
            assert b[0] >= 0 and b[1] >= 0 and b[2] < 256 and b[3] < 256
            n_random += 1
    assert n_random > 50
    sides = np.array(sides)
    assert sides.min() >= low - 1e-9 and sides.max() < high
    np.testing.assert_allclose(sides, np.round(sides), atol=1e-9)  # randint(low, high) px
    assert sides.max() - sides.min() > 0.6 * (high - 1 - low)  # the whole range is drawn


def test_centred_window_jitter():
    """RAND_CENTER: when the coin (the draw after the scale) is > 0.5, the window centre is
    within randint(0, 15) px of the reference's centre on both axes (the image is larger than the window)."""
    aug = SaccadeRandomCrop((255, 255), rand_center=True)
    img = np.zeros((600, 600, 3), np.uint8)
    box = np.array([[200.0, 260.0, 300.0, 340.0]])
    n_centred = 0
    for seed in range(200):
        np.random.seed(seed)
        t = aug.get_transform(img, box)
        rs = np.random.RandomState(seed)
        rs.randint(1), rs.randint(96, 255)  # reference index, zoomed max side (100 > 96)
        b, m = t.apply_box(box)[0], box[0] * t.scale  # crop frame, resized-image frame
        if rs.uniform() > 0.5:
            n_centred += 1
            assert abs(t.xc - (m[0] + m[2]) // 2) <= 14 and abs(t.yc - (m[1] + m[3]) // 2) <= 14
        else:  # the window contains the reference
            assert b[0] >= 0 and b[1] >= 0 and b[2] < 256 and b[3] < 256
    assert 70 < n_centred < 130


def test_empty_image_uses_scales_and_gives_empty_instances(tmp_path):
    img = np.full((300, 350, 3), 9, np.uint8)
    mapper = CornerNetSaccadeDatasetMapper(_cfg(flip="horizontal", color=True), is_train=True)
    path = _write(tmp_path, img)
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(_dict(path, img, []))
        inst = out["instances"]
        assert out["image"].shape == (3, 255, 255) and out["image"].dtype == torch.float32
        assert len(inst) == 0 and inst.gt_boxes.tensor.shape == (0, 4) and inst.gt_ignore.shape == (0,)
        assert inst.gt_ignore.dtype == torch.bool and inst.gt_classes.dtype == torch.int64
        np.random.seed(seed)
        t = build_saccade_augmentation(_cfg(), True)[0].get_transform(img, None)
        seen.add(t.scale)
        np.random.seed(seed)
        assert t.scale == np.random.choice(SACCADE_SCALES)
    assert seen <= set(SACCADE_SCALES) and len(seen) >= 3


def test_bad_config_values_name_the_key():
    with pytest.raises(ValueError, match="REF_SCALE_RANGES"):
        SaccadeRandomCrop((255, 255), (96, 32), ((96, 300), (32, 97), (16, 33)))
    with pytest.raises(ValueError, match="REF_SCALE_RANGES"):
        SaccadeRandomCrop((255, 255), (96, 32), ((96, 255), (32, 97)))
    with pytest.raises(ValueError, match="REF_SIZE_THRESHOLDS"):
        SaccadeRandomCrop((255, 255), (32, 96))
    cfg = _cfg()
    cfg.INPUT.CORNERNET.SACCADE.MIN_VISIBLE = 1.5
    with pytest.raises(ValueError, match="MIN_VISIBLE"):
        CornerNetSaccadeDatasetMapper(cfg, is_train=True)


def test_clip_boxes_inclusive():
    boxes, keep = clip_boxes_inclusive(np.array([[-5, -5, 300, 20], [10, 10, 10, 20], [5, 5, 300, 300]]),
                                       (0, 100, 0, 200))
    np.testing.assert_allclose(boxes, [[0, 0, 199, 20], [5, 5, 199, 99]])
    assert keep.tolist() == [0, 2]


# ---------------------------------------------------------------------------------------------
def test_mapper_on_a_real_bccd_image(bccd_root):
    from common.data.datasets import load_coco_json

    cfg = _cfg(flip="horizontal", color=True)
    dicts = load_coco_json(str(bccd_root / "annotations_train.json"), str(bccd_root / "images"))
    d = next(x for x in dicts if len(x["annotations"]) >= 5)
    mapper = CornerNetSaccadeDatasetMapper(cfg, is_train=True)
    n_pos = 0
    for seed in range(4):
        np.random.seed(seed)
        out = mapper(d)
        inst = out["instances"]
        assert out["image"].shape == (3, 255, 255) and out["image"].dtype == torch.float32
        assert torch.isfinite(out["image"]).all()
        assert (out["height"], out["width"]) == (d["height"], d["width"])
        b = inst.gt_boxes.tensor
        assert inst.image_size == (255, 255) and b.dtype == torch.float32
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 255).all() and (b[:, 3] <= 255).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert inst.gt_ignore.dtype == torch.bool and inst.gt_ignore.shape == (len(inst),)
        assert inst.gt_classes.dtype == torch.int64
        n_pos += int((~inst.gt_ignore).sum())
    assert n_pos > 0
    test_out = CornerNetSaccadeDatasetMapper(cfg, is_train=False)(d)
    assert tuple(test_out["image"].shape) == (3, d["height"], d["width"]) and "instances" not in test_out
