"""Tests for common.structures: BoxMode, Boxes, pairwise overlaps, Instances, ImageList."""
import json

import numpy as np
import pytest
import torch

from common.structures import (
    Boxes,
    BoxMode,
    ImageList,
    Instances,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
)


# ---------------------------------------------------------------- BoxMode
@pytest.mark.parametrize(
    "box",
    [
        [5, 5, 10, 10],
        (5.0, 5.0, 10.0, 10.0),
        np.array([[5, 5, 10, 10]], dtype=np.float32),
        np.array([[5, 5, 10, 10]], dtype=np.int64),
        torch.tensor([[5, 5, 10, 10]], dtype=torch.float64),
        torch.tensor([[5, 5, 10, 10]], dtype=torch.int32),
    ],
)
def test_boxmode_xywh_xyxy_roundtrip_keeps_type_and_dtype(box):
    xyxy = BoxMode.convert(box, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert type(xyxy) is type(box)
    assert np.asarray(xyxy).reshape(-1).tolist() == [5, 5, 15, 15]
    if hasattr(box, "dtype"):
        assert xyxy.dtype == box.dtype
        assert xyxy.shape == box.shape
    back = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert np.asarray(back).reshape(-1).tolist() == [5, 5, 10, 10]
    # the input is never modified in place
    assert np.asarray(box).reshape(-1).tolist() == [5, 5, 10, 10]


def test_boxmode_rotated_and_errors():
    # w=4, h=2 rotated by 90 degrees around (10, 10): enclosing box is 2 wide and 4 tall
    out = BoxMode.convert(torch.tensor([[10.0, 10.0, 4.0, 2.0, 90.0]]), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    assert torch.allclose(out, torch.tensor([[9.0, 8.0, 11.0, 12.0]]), atol=1e-5)
    assert out.dtype == torch.float32
    out = BoxMode.convert([5.0, 5.0, 10.0, 10.0], BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    assert out == [10.0, 10.0, 10.0, 10.0, 0.0]
    with pytest.raises(NotImplementedError):
        BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_REL, BoxMode.XYXY_ABS)
    with pytest.raises(ValueError):
        BoxMode.convert([0, 0, 1], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert BoxMode.convert([1, 2, 3, 4], BoxMode.XYXY_ABS, BoxMode.XYXY_ABS) == [1, 2, 3, 4]
    assert json.dumps(BoxMode.XYWH_ABS) == "1"
    assert [int(m) for m in BoxMode] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- Boxes
def test_boxes_basic_ops():
    b = Boxes([[0, 0, 10, 20], [5, 5, 5, 8], [-2, 1, 30, 40]])
    assert b.tensor.dtype == torch.float32 and len(b) == 3
    assert b.area().tolist() == [200.0, 0.0, 1248.0]
    assert b.nonempty().tolist() == [True, False, True]
    assert b.inside_box((25, 25)).tolist() == [True, True, False]
    assert b.get_centers()[0].tolist() == [5.0, 10.0]
    c = b.clone()
    c.clip((25, 20))  # (h, w)
    assert c.tensor[2].tolist() == [0.0, 1.0, 20.0, 25.0]
    assert b.tensor[2, 0] == -2  # clone is independent
    c.scale(2.0, 0.5)
    assert c.tensor[0].tolist() == [0.0, 0.0, 20.0, 10.0]
    assert b[1].tensor.shape == (1, 4)
    assert len(b[torch.tensor([True, False, True])]) == 2
    assert len(b[1:]) == 2
    assert [r.tolist() for r in b][1] == [5.0, 5.0, 5.0, 8.0]
    assert b.to("cpu").device.type == "cpu"
    assert Boxes([]).tensor.shape == (0, 4)
    with pytest.raises(ValueError):
        Boxes(torch.zeros(3, 5))
    with pytest.raises(ValueError):
        Boxes([[0, 0, float("inf"), 1]]).clip((10, 10))


def test_boxes_cat():
    cat = Boxes.cat([Boxes([[0, 0, 1, 1]]), Boxes([[1, 1, 2, 2], [2, 2, 3, 3]])])
    assert cat.tensor.shape == (3, 4) and cat.tensor[2, 0] == 2
    empty = Boxes.cat([])
    assert isinstance(empty, Boxes) and empty.tensor.shape == (0, 4)
    with pytest.raises(TypeError):
        Boxes.cat([torch.zeros(1, 4)])


# ---------------------------------------------------------------- pairwise
def test_pairwise_iou_ioa_hand_table():
    boxes1 = Boxes([[0, 0, 2, 2], [1, 1, 3, 3]])
    boxes2 = Boxes([[0, 0, 2, 2], [1, 0, 2, 2], [2, 2, 4, 4], [0, 0, 4, 4], [5, 5, 6, 6]])
    # intersections by hand: row 0 = 4, 2, 0 (touching corner), 4, 0; row 1 = 1, 1, 1, 4, 0
    inter = torch.tensor([[4.0, 2.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 4.0, 0.0]])
    assert torch.equal(pairwise_intersection(boxes1, boxes2), inter)
    # areas: boxes1 = 4, 4; boxes2 = 4, 2, 4, 16, 1
    iou = torch.tensor([[1.0, 2 / 4, 0.0, 4 / 16, 0.0], [1 / 7, 1 / 5, 1 / 7, 4 / 16, 0.0]])
    assert torch.allclose(pairwise_iou(boxes1, boxes2), iou)
    ioa = torch.tensor([[1.0, 1.0, 0.0, 0.25, 0.0], [0.25, 0.5, 0.25, 0.25, 0.0]])
    assert torch.allclose(pairwise_ioa(boxes1, boxes2), ioa)


def test_pairwise_iou_degenerate_boxes_give_zero_not_nan():
    empty = Boxes([[3, 3, 3, 3]])
    out = pairwise_iou(empty, empty)
    assert out.tolist() == [[0.0]]
    assert pairwise_iou(Boxes([]), Boxes([[0, 0, 1, 1]])).shape == (0, 1)


# ---------------------------------------------------------------- Instances
def _instances():
    inst = Instances((10, 20))
    inst.boxes = Boxes(torch.arange(12, dtype=torch.float32).view(3, 4))
    inst.scores = torch.tensor([0.1, 0.2, 0.3])
    inst.names = ["a", "b", "c"]
    return inst


def test_instances_fields_and_length_check():
    inst = _instances()
    assert len(inst) == 3 and inst.image_size == (10, 20)
    assert inst.has("scores") and not inst.has("labels")
    assert inst.get("names") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="length"):
        inst.labels = torch.zeros(2)
    with pytest.raises(AttributeError):
        _ = inst.labels
    inst.remove("names")
    assert set(inst.get_fields()) == {"boxes", "scores"}
    with pytest.raises(NotImplementedError):
        len(Instances((1, 1)))
    with pytest.raises(NotImplementedError):
        iter(inst)
    assert "num_instances=2" not in repr(inst) and "num_instances=3" in repr(inst)


def test_instances_indexing():
    inst = _instances()
    last = inst[-1]
    assert len(last) == 1 and last.scores.tolist() == [pytest.approx(0.3)] and last.names == ["c"]
    assert inst[0].boxes.tensor.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert inst[-3].names == ["a"]
    with pytest.raises(IndexError):
        inst[3]
    with pytest.raises(IndexError):
        inst[-4]
    inst.remove("names")  # plain lists cannot be indexed by tensors (as in detectron2)
    masked = inst[torch.tensor([True, False, True])]
    assert masked.scores.tolist() == pytest.approx([0.1, 0.3])
    assert len(inst[1:]) == 2
    assert inst.to("cpu").scores.device.type == "cpu"


def test_instances_copy_and_pickle():
    import copy
    import pickle

    inst = _instances()
    for other in (copy.deepcopy(inst), pickle.loads(pickle.dumps(inst))):
        assert other.names == inst.names and torch.equal(other.scores, inst.scores)
        assert other.image_size == (10, 20)


def test_instances_cat():
    a, b = _instances(), _instances()[1:]
    out = Instances.cat([a, b])
    assert len(out) == 5
    assert out.names == ["a", "b", "c", "b", "c"]
    assert out.boxes.tensor.shape == (5, 4)
    assert out.scores.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.2, 0.3])
    with pytest.raises(ValueError):
        Instances.cat([a, Instances((11, 20), scores=torch.zeros(1))])
    with pytest.raises(ValueError):
        Instances.cat([])
    with pytest.raises(ValueError, match="Unsupported"):
        Instances.cat([Instances((1, 1), x="ab"), Instances((1, 1), x="cd")])


# ---------------------------------------------------------------- ImageList
def test_imagelist_padding_single():
    img = torch.ones(3, 15, 20)
    il = ImageList.from_tensors([img], size_divisibility=4, pad_value=-1.0)
    assert il.tensor.shape == (1, 3, 16, 20)
    assert il.image_sizes == [(15, 20)]
    assert torch.equal(il[0], img)
    assert (il.tensor[0, :, 15:, :] == -1).all()


def test_imagelist_padding_batch():
    a, b = torch.rand(3, 25, 20), torch.rand(3, 10, 10)
    il = ImageList.from_tensors([a, b], size_divisibility=4)
    assert il.tensor.shape == (2, 3, 28, 20)
    assert il.image_sizes == [(25, 20), (10, 10)]
    assert torch.equal(il[1], b) and torch.equal(il[0], a)
    assert il.tensor[1, :, 10:, :].abs().sum() == 0 and il.tensor[1, :, :, 10:].abs().sum() == 0
    assert len(il) == 2 and il.to(torch.float64).tensor.dtype == torch.float64
    assert il.device.type == "cpu"
    # no divisibility: exact max size
    assert ImageList.from_tensors([a, b]).tensor.shape == (2, 3, 25, 20)
    # constraints dict as produced by Backbone.padding_constraints
    il = ImageList.from_tensors([b], padding_constraints={"size_divisibility": 8, "square_size": 12})
    assert il.tensor.shape == (1, 3, 16, 16)


def test_imagelist_errors():
    with pytest.raises(ValueError):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match="leading dims"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
