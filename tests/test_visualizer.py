"""Visualizer (OpenCV) draws boxes where they are, labels with class names, returns RGB uint8."""
import numpy as np
import pytest
import torch

from common.structures import Boxes, Instances
from common.utils.colormap import colormap, random_color, random_colors
from common.utils.visualizer import ColorMode, Visualizer, _create_text_labels

H, W = 100, 120
GRAY = 128
BOX = [20.0, 30.0, 80.0, 90.0]  # XYXY


def _image():
    return np.full((H, W, 3), GRAY, dtype=np.uint8)


def _preds(classes=(0,), scores=(0.93,), boxes=(BOX,)):
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def _capture_texts(monkeypatch):
    texts = []
    original = Visualizer.draw_text

    def spy(self, text, position, **kwargs):
        texts.append((text, position))
        return original(self, text, position, **kwargs)

    monkeypatch.setattr(Visualizer, "draw_text", spy)
    return texts


def test_box_is_drawn_at_its_location_in_rgb():
    vis = Visualizer(_image(), {"thing_classes": ["RBC"]})
    vis.overlay_instances(boxes=np.array([BOX]), assigned_colors=[(1.0, 0.0, 0.0)])
    out = vis.get_output().get_image()
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    # Middle of the right edge (x = 80): red blended at alpha 0.5 over gray 128 -> R up, G/B down.
    r, g, b = out[60, 80].astype(int)
    assert r == round(0.5 * 255 + 0.5 * GRAY) and g == b == GRAY // 2
    # Far from the box and its label: untouched. Inside the box, away from edges and label: untouched.
    assert (out[5, 110] == GRAY).all() and (out[95, 5] == GRAY).all()
    assert (out[75, 50] == GRAY).all()


def test_draw_instance_predictions_labels_with_class_names(monkeypatch):
    texts = _capture_texts(monkeypatch)
    out = Visualizer(_image(), {"thing_classes": ["RBC", "WBC"]}).draw_instance_predictions(
        _preds(classes=(1,), scores=(0.93,))
    ).get_image()
    assert [t for t, _ in texts] == ["WBC 93%"]
    assert texts[0][1] == (BOX[0], BOX[1])  # large box: label at its top-left corner, inside
    # The label's dark background lands just inside the top-left corner.
    assert out[33:38, 22:30].mean() < GRAY * 0.6
    assert not np.array_equal(out, _image())


def test_labels_without_metadata_use_class_index(monkeypatch):
    texts = _capture_texts(monkeypatch)
    Visualizer(_image()).draw_instance_predictions(_preds(classes=(2,), scores=(0.5,)))
    assert [t for t, _ in texts] == ["2 50%"]


def test_small_box_label_goes_below_box(monkeypatch):
    texts = _capture_texts(monkeypatch)
    Visualizer(_image(), {"thing_classes": ["P"]}).draw_instance_predictions(
        _preds(boxes=([10.0, 10.0, 30.0, 25.0],))
    )
    assert texts[0][1] == (10.0, 25.0)


def test_create_text_labels():
    assert _create_text_labels([0, 1], [0.5, 0.257], ["a", "b"]) == ["a 50%", "b 26%"]
    assert _create_text_labels([1], None, ["a", "b"], is_crowd=[1]) == ["b|crowd"]
    assert _create_text_labels(None, [0.5], None) == ["50%"]
    with pytest.raises(ValueError, match="outside thing_classes"):
        _create_text_labels([3], None, ["a", "b"])


def test_scale_changes_output_size_and_draws_scaled():
    vis = Visualizer(_image(), scale=2.0)
    vis.overlay_instances(boxes=np.array([BOX]), assigned_colors=[(0.0, 0.0, 1.0)])
    out = vis.get_output().get_image()
    assert out.shape == (2 * H, 2 * W, 3)
    assert out[120, 160, 2] > GRAY and (out[10, 230] == GRAY).all()  # right edge at x = 160


def test_draw_dataset_dict_xywh(monkeypatch):
    texts = _capture_texts(monkeypatch)
    dic = {"file_name": "x.jpg", "annotations": [
        {"bbox": [20, 30, 60, 60], "bbox_mode": 1, "category_id": 0},
    ]}
    vis = Visualizer(_image(), {"thing_classes": ["RBC"]})
    out = vis.draw_dataset_dict(dic).get_image()
    assert [t for t, _ in texts] == ["RBC"]
    assert not (out[60, 80] == GRAY).all()  # XYWH converted: right edge at 20 + 60 = 80
    with pytest.raises(ValueError, match="x.jpg"):
        vis.draw_dataset_dict({"file_name": "x.jpg", "annotations": [{"bbox": [0, 0, 1, 1], "bbox_mode": 4, "category_id": 0}]})


def test_masks_and_bw_mode():
    inst = _preds()
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 40:60, 40:60] = True
    inst.pred_masks = mask
    img = _image()
    img[..., 0] = 200  # coloured image: grayscale mode must change pixels outside the mask
    out = Visualizer(img, instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(inst).get_image()
    assert out[5, 110, 0] == out[5, 110, 1] == out[5, 110, 2]  # grayscale far away
    assert out[50, 50, 0] != out[50, 50, 1] or out[50, 50, 1] != out[50, 50, 2]  # mask keeps colour


def test_bad_inputs():
    with pytest.raises(ValueError, match="RGB image"):
        Visualizer(np.zeros((4, 4, 4), dtype=np.uint8))
    vis = Visualizer(_image())
    with pytest.raises(ValueError, match="2 labels for 1 instances"):
        vis.overlay_instances(boxes=np.array([BOX]), labels=["a", "b"])
    with pytest.raises(ValueError, match="RGB triples"):
        vis.draw_box(BOX, edge_color=(255, 0, 0))


def test_colormap():
    rgb = colormap(rgb=True, maximum=1)
    assert rgb.shape == (74, 3) and rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(colormap(rgb=False, maximum=255), rgb[:, ::-1] * 255, rtol=1e-6)
    assert len({tuple(c) for c in rgb.round(3).tolist()}) == 74  # all distinct
    assert random_color(rgb=True, maximum=1).shape == (3,)
    colors = random_colors(5, rgb=True, maximum=1)
    assert len({tuple(c) for c in np.round(colors, 4).tolist()}) == 5
