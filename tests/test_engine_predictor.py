"""DefaultPredictor with a toy meta-architecture: channel order, test resize, metadata source."""
import numpy as np
import pytest
import torch
from torch import nn

from common.checkpoint import DetectionCheckpointer
from common.config import get_cfg
from common.engine import DefaultPredictor
from common.modeling import META_ARCH_REGISTRY

_ARCH = "H4ToyEchoArch"


class H4ToyEchoArch(nn.Module):
    """Echoes what it received: the preprocessed image and the original size."""

    def __init__(self, cfg):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, batched_inputs):
        return [{"image": x["image"] * self.scale, "height": x["height"], "width": x["width"]} for x in batched_inputs]


if _ARCH not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(H4ToyEchoArch)


def _cfg(weights, fmt="RGB", test_sets=()):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = _ARCH
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.INPUT.MIN_SIZE_TEST = 20
    cfg.INPUT.MAX_SIZE_TEST = 40
    cfg.INPUT.FORMAT = fmt
    cfg.DATASETS.TEST = test_sets
    return cfg


def _save(tmp_path, metadata=None):
    model = H4ToyEchoArch(None)
    with torch.no_grad():
        model.scale.fill_(2.0)
    ckpt = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True)
    if metadata is not None:
        ckpt.extra_data["metadata"] = metadata
    ckpt.save("model_final")
    return tmp_path / "model_final.pth"


def test_predictor_rgb_flip_resize_and_checkpoint_metadata(tmp_path):
    weights = _save(tmp_path, {"thing_classes": ["rbc", "wbc", "platelets"]})
    predictor = DefaultPredictor(_cfg(weights))
    assert predictor.metadata.thing_classes == ["rbc", "wbc", "platelets"]
    bgr = np.zeros((10, 30, 3), dtype=np.uint8)
    bgr[..., 0] = 200  # blue
    out = predictor(bgr)
    # shortest edge 10 -> 20 would make the long edge 60 > 40, so scale = 40 / 30 -> 13 x 40
    assert tuple(out["image"].shape) == (3, 13, 40)
    assert (out["height"], out["width"]) == (10, 30)
    # RGB model: blue lands in the last channel; weights loaded (scale 2)
    assert out["image"][2].mean().item() == pytest.approx(400.0)
    assert out["image"][0].abs().max().item() == 0.0


def test_predictor_bgr_and_catalog_metadata(tmp_path):
    from common.data import MetadataCatalog

    MetadataCatalog.get("h4_toy_test").set(thing_classes=["a"])
    weights = _save(tmp_path)  # no metadata in the checkpoint
    predictor = DefaultPredictor(_cfg(weights, fmt="BGR", test_sets=("h4_toy_test",)))
    assert predictor.metadata.thing_classes == ["a"]
    bgr = np.zeros((20, 20, 3), dtype=np.uint8)
    bgr[..., 0] = 1
    out = predictor(bgr)
    assert out["image"][0].mean().item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((20, 20), dtype=np.uint8))
