"""Transforms and augmentations: boxes must follow the image (hand-computed coordinates)."""
import numpy as np
import pytest
import torch
from PIL import Image

import common.data.transforms as T
from common.config import get_cfg
from common.data import detection_utils as utils
from common.structures import BoxMode


def _img(h, w, c=3):
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c) if c else np.zeros((h, w), np.uint8)


def test_hflip_box_annotation():
    anno = {"bbox": [10, 10, 200, 300], "bbox_mode": BoxMode.XYXY_ABS}
    out = utils.transform_instance_annotations(anno, [T.HFlipTransform(400)], (400, 400))
    np.testing.assert_allclose(out["bbox"], [200, 10, 390, 300])
    assert out["bbox_mode"] == BoxMode.XYXY_ABS


def test_xywh_annotation_is_converted_then_transformed():
    anno = {"bbox": [10, 20, 30, 40], "bbox_mode": BoxMode.XYWH_ABS}
    out = utils.transform_instance_annotations(anno, T.ResizeTransform(100, 100, 50, 200), (50, 200))
    # XYXY [10, 20, 40, 60]; x * 2, y * 0.5
    np.testing.assert_allclose(out["bbox"], [20, 10, 80, 30])


def test_crop_clips_box_to_image():
    anno = {"bbox": [5, 5, 30, 30], "bbox_mode": BoxMode.XYXY_ABS}
    crop = T.CropTransform(10, 10, 15, 100)  # x0, y0, w, h
    out = utils.transform_instance_annotations(anno, [crop], (100, 15))
    # shifted to [-5, -5, 20, 20], then clipped to w=15, h=100
    np.testing.assert_allclose(out["bbox"], [0, 0, 15, 20])


def test_resize_shortest_edge_output_shape_and_boxes():
    aug_input = T.AugInput(_img(480, 640), boxes=np.array([[100.0, 50.0, 300.0, 250.0]]))
    tfms = T.AugmentationList([T.ResizeShortestEdge(240, 1000)])(aug_input)
    assert aug_input.image.shape == (240, 320, 3)
    np.testing.assert_allclose(aug_input.boxes, [[50, 25, 150, 125]])
    # the inverse maps the boxes back
    np.testing.assert_allclose(tfms.inverse().apply_box(aug_input.boxes), [[100, 50, 300, 250]])


@pytest.mark.parametrize(
    "hw,short,max_size,expected",
    [
        ((480, 640), 240, 1000, (240, 320)),
        ((480, 640), 600, 700, (525, 700)),  # 600x800 capped by 700/800
        ((480, 641), 240, 10000, (240, 321)),  # 320.5 rounds up with int(x + 0.5)
        ((640, 480), 800, 1333, (1067, 800)),  # 1066.67 -> 1067
        ((200, 300), 800, 1333, (800, 1200)),
    ],
)
def test_resize_shortest_edge_rule(hw, short, max_size, expected):
    assert T.ResizeShortestEdge.get_output_shape(hw[0], hw[1], short, max_size) == expected


def test_resize_shortest_edge_range_sampling_is_inclusive_and_bounded():
    np.random.seed(0)
    aug = T.ResizeShortestEdge((10, 12), 1000, "range")
    img = _img(20, 40)
    sizes = {aug.get_transform(img).new_h for _ in range(200)}
    assert sizes == {10, 11, 12}


def test_resize_shortest_edge_choice_and_bad_range():
    np.random.seed(0)
    aug = T.ResizeShortestEdge([8, 16], sample_style="choice")
    assert {aug.get_transform(_img(20, 40)).new_h for _ in range(100)} == {8, 16}
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN"):
        T.ResizeShortestEdge((8, 12, 16), sample_style="range")


def test_build_augmentation_default_cfg():
    cfg = get_cfg()
    augs = utils.build_augmentation(cfg, is_train=True)
    assert [type(a) for a in augs] == [T.ResizeShortestEdge, T.RandomFlip]
    image, tfms = T.apply_augmentations(augs, np.zeros((200, 300, 3), np.uint8))
    assert image.shape == (800, 1200, 3)
    cfg.INPUT.RANDOM_FLIP = "none"
    assert len(utils.build_augmentation(cfg, is_train=True)) == 1
    assert len(utils.build_augmentation(get_cfg(), is_train=False)) == 1


def test_reprs():
    assert str(T.RandomFlip()) == "RandomFlip()"
    assert str(T.RandomFlip(prob=1.0)) == "RandomFlip(prob=1.0)"
    assert repr(T.RandomCrop("relative", (100, 100))) == "RandomCrop(crop_type='relative', crop_size=(100, 100))"
    assert str(T.ResizeShortestEdge(800, 1333, "choice")) == (
        "ResizeShortestEdge(short_edge_length=(800, 800), max_size=1333, sample_style='choice')"
    )


def test_random_flip_moves_pixels_and_boxes():
    img = _img(4, 6)
    aug_input = T.AugInput(img, boxes=np.array([[1.0, 0.0, 3.0, 2.0]]))
    tfm = T.RandomFlip(prob=1.0)(aug_input)
    assert isinstance(tfm, T.HFlipTransform)
    np.testing.assert_array_equal(aug_input.image, img[:, ::-1])
    np.testing.assert_allclose(aug_input.boxes, [[3, 0, 5, 2]])

    aug_input = T.AugInput(img, boxes=np.array([[1.0, 0.0, 3.0, 2.0]]))
    T.RandomFlip(prob=1.0, horizontal=False, vertical=True)(aug_input)
    np.testing.assert_array_equal(aug_input.image, img[::-1])
    np.testing.assert_allclose(aug_input.boxes, [[1, 2, 3, 4]])

    assert isinstance(T.RandomFlip(prob=0.0).get_transform(img), T.NoOpTransform)
    with pytest.raises(ValueError):
        T.RandomFlip(horizontal=True, vertical=True)


@pytest.mark.parametrize("seed", range(5))
def test_random_crop_absolute_range_within_bounds(seed):
    np.random.seed(seed)
    aug = T.RandomCrop("absolute_range", (384, 600))
    img = np.zeros((480, 640, 3), np.uint8)
    for _ in range(20):
        tfm = aug.get_transform(img)
        assert 384 <= tfm.h <= 480 and 384 <= tfm.w <= 600
        assert 0 <= tfm.y0 <= 480 - tfm.h and 0 <= tfm.x0 <= 640 - tfm.w
        assert tfm.apply_image(img).shape == (tfm.h, tfm.w, 3)
        box = tfm.apply_box(np.array([[400.0, 400.0, 450.0, 470.0]]))
        np.testing.assert_allclose(box, [[400 - tfm.x0, 400 - tfm.y0, 450 - tfm.x0, 470 - tfm.y0]])


def test_random_crop_absolute_range_small_image_uses_whole_side():
    # h=300 < 384: the crop height must be exactly min(h, 384) = min(h, 600) = 300
    np.random.seed(0)
    aug = T.RandomCrop("absolute_range", (384, 600))
    for _ in range(10):
        ch, cw = aug.get_crop_size((300, 1000))
        assert ch == 300 and 384 <= cw <= 600


def test_random_crop_other_types():
    assert T.RandomCrop("relative", (0.5, 0.5)).get_crop_size((200, 301)) == (100, 151)
    assert T.RandomCrop("absolute", (50, 500)).get_crop_size((200, 300)) == (50, 300)
    np.random.seed(0)
    for _ in range(20):
        ch, cw = T.RandomCrop("relative_range", (0.5, 0.8)).get_crop_size((100, 200))
        assert 50 <= ch <= 100 and 160 <= cw <= 200
    with pytest.raises(ValueError, match="INPUT.CROP.TYPE"):
        T.RandomCrop("bogus", (1, 1))


def test_resize_transform_uint8_matches_pil_and_keeps_channel_dims():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 255, size=(6, 8, 3), dtype=np.uint8)
    tfm = T.ResizeTransform(6, 8, 3, 5)
    expected = np.asarray(Image.fromarray(img).resize((5, 3), Image.BILINEAR))
    np.testing.assert_array_equal(tfm.apply_image(img), expected)
    assert tfm.apply_image(img[:, :, :1]).shape == (3, 5, 1)
    assert tfm.apply_image(img[:, :, 0]).shape == (3, 5)
    # float input goes through torch interpolate; a constant image stays constant
    out = tfm.apply_image(np.full((6, 8, 2), 0.25, dtype=np.float32))
    assert out.shape == (3, 5, 2) and np.allclose(out, 0.25)
    with pytest.raises(ValueError, match="expects an image of size"):
        tfm.apply_image(np.zeros((5, 8, 3), np.uint8))


def test_resize_fixed_and_segmentation_nearest():
    seg = np.array([[0, 0, 5, 5], [0, 0, 5, 5]], dtype=np.uint8)
    tfm = T.Resize((4, 8)).get_transform(seg)
    out = tfm.apply_segmentation(seg)
    assert out.shape == (4, 8) and set(np.unique(out)) == {0, 5}


def test_random_apply_probability():
    np.random.seed(0)
    aug = T.RandomApply(T.RandomFlip(prob=1.0), prob=0.3)
    img = _img(2, 3)
    n_flips = sum(isinstance(aug.get_transform(img), T.HFlipTransform) for _ in range(2000))
    assert 0.25 < n_flips / 2000 < 0.35
    assert isinstance(T.RandomApply(T.HFlipTransform(3), prob=0.0).get_transform(img), T.NoOpTransform)
    with pytest.raises(ValueError):
        T.RandomApply(T.RandomFlip(), prob=1.5)


def test_color_augmentations():
    img = np.full((2, 2, 3), 100, dtype=np.uint8)
    out, _ = T.apply_augmentations([T.RandomBrightness(2.0, 2.0)], img)
    assert (out == 200).all()
    out, _ = T.apply_augmentations([T.RandomBrightness(3.0, 3.0)], img)
    assert (out == 255).all()  # clipped
    img2 = np.array([[[0, 0, 0]], [[200, 200, 200]]], dtype=np.uint8)  # mean 100
    out, _ = T.apply_augmentations([T.RandomContrast(0.5, 0.5)], img2)
    np.testing.assert_array_equal(out[:, 0, 0], [50, 150])
    out, _ = T.apply_augmentations([T.RandomSaturation(0.0, 0.0)], np.array([[[255, 0, 0]]], np.uint8))
    np.testing.assert_array_equal(out[0, 0], [76, 76, 76])  # 0.299 * 255 = 76.2


def test_auginput_rejects_bad_images_and_transform_passthrough():
    with pytest.raises(TypeError):
        T.AugInput(torch.zeros(2, 2))
    # a plain Transform in an augmentation list is applied as is
    image, tfms = T.apply_augmentations([T.HFlipTransform(3)], _img(2, 3))
    assert isinstance(tfms[0], T.HFlipTransform)
    assert T.apply_transform_gens is T.apply_augmentations and T.TransformGen is T.Augmentation
