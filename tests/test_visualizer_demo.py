"""common.utils.demo.main end to end with a fixed-output detector and a real checkpoint file."""
import logging

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from common.modeling import META_ARCH_REGISTRY
from common.structures import Boxes, Instances
from common.utils import demo
from common.utils.visualizer import Visualizer

SEEN = {}


@META_ARCH_REGISTRY.register()
class H3DemoFixedDetector(nn.Module):
    """Two detections in relative coordinates of the original image: one at 0.9, one at 0.3."""

    def __init__(self, cfg):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))
        SEEN["custom_key"] = cfg.H3DEMO.KEY

    def forward(self, batched_inputs):
        out = []
        for inp in batched_inputs:
            SEEN["pixel_mean"] = inp["image"].float().mean(dim=(1, 2)).tolist()  # channel order check
            h, w = inp["height"], inp["width"]
            inst = Instances((h, w))
            rel = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.1, 0.1]])
            inst.pred_boxes = Boxes(rel * torch.tensor([w, h, w, h], dtype=torch.float32))
            inst.scores = torch.tensor([0.9, 0.3]) + self.scale
            inst.pred_classes = torch.tensor([1, 0])
            out.append({"instances": inst})
        return out


def _add_h3demo_config(cfg):
    from common.config import CfgNode

    cfg.H3DEMO = CfgNode()
    cfg.H3DEMO.KEY = "default"


@pytest.fixture()
def setup(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    img = np.zeros((64, 80, 3), dtype=np.uint8)
    img[..., 2] = 200  # BGR: pure red image
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), img)
    (images / "broken.png").write_bytes(b"not an image")
    weights = tmp_path / "model.pth"
    torch.save({"model": {"scale": torch.zeros(1)}, "metadata": {"thing_classes": ["RBC", "WBC"]}}, weights)
    opts = ["--opts", "MODEL.META_ARCHITECTURE", "H3DemoFixedDetector", "MODEL.DEVICE", "cpu",
            "MODEL.WEIGHTS", str(weights), "INPUT.FORMAT", "RGB", "H3DEMO.KEY", "from_cli",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "100"]
    return images, opts


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_demo_main_writes_visualisations_and_skips_broken(setup, tmp_path, monkeypatch):
    images, opts = setup
    texts = []
    original = Visualizer.draw_text
    monkeypatch.setattr(
        Visualizer, "draw_text", lambda self, text, pos, **kw: texts.append(text) or original(self, text, pos, **kw)
    )
    out_dir = tmp_path / "vis"
    capture = _Capture()
    logger = logging.getLogger("common.utils.demo")
    logger.addHandler(capture)
    try:
        written = demo.main(
            ["--input", str(images / "*.png"), "--output", str(out_dir), "--confidence-threshold", "0.5"] + opts,
            config_adders=[_add_h3demo_config],
        )
    finally:
        logger.removeHandler(capture)

    assert written == [str(out_dir / "a.png"), str(out_dir / "b.png")]
    assert SEEN["custom_key"] == "from_cli"  # adder ran before merge_from_list
    # Read as BGR, flipped to RGB for an RGB model: the red channel comes first.
    assert SEEN["pixel_mean"][0] == pytest.approx(200) and SEEN["pixel_mean"][2] == pytest.approx(0)
    assert texts == ["WBC 90%", "WBC 90%"]  # class names from the checkpoint; 0.3 filtered out
    vis = cv2.imread(str(out_dir / "a.png"))
    assert vis.shape == (64, 80, 3)
    assert not np.array_equal(vis[32, 60], [0, 0, 200])  # right box edge at x = 60 is drawn
    np.testing.assert_array_equal(vis[2, 78], [0, 0, 200])  # far corner untouched
    assert any("broken.png" in m and "cannot read image" in m for m in capture.messages)
    assert any(m.startswith(str(images / "a.png") + ": detected 1 instances in ") for m in capture.messages)


def test_demo_output_file_and_errors(setup, tmp_path):
    images, opts = setup
    out_file = tmp_path / "single" / "result.jpg"
    written = demo.main(["--input", str(images / "a.png"), "--output", str(out_file)] + opts,
                        config_adders=[_add_h3demo_config])
    assert written == [str(out_file)] and out_file.is_file()

    with pytest.raises(FileNotFoundError, match="nothing_here"):
        demo.main(["--input", str(tmp_path / "nothing_here*.jpg"), "--output", str(tmp_path / "o")] + opts,
                  config_adders=[_add_h3demo_config])
    with pytest.raises(ValueError, match="give a directory"):
        demo.main(["--input", str(images / "a.png"), str(images / "b.png"), "--output", str(out_file)] + opts,
                  config_adders=[_add_h3demo_config])


def test_parser_defaults():
    args = demo.get_parser().parse_args(["--input", "x.jpg", "--output", "o", "--opts", "A", "1"])
    # None: the model's own test threshold (model_score_threshold), detectron2's 0.5 without one.
    assert args.confidence_threshold is None and args.opts == ["A", "1"] and args.config_file == ""


def test_model_score_threshold_reads_the_projects_key():
    from common.config import get_cfg
    from common.config.config import CfgNode

    cfg = get_cfg()
    assert demo.model_score_threshold(cfg) == 0.5
    cfg.MODEL.META_ARCHITECTURE = "FCOS"
    cfg.MODEL.FCOS = CfgNode({"NUM_CLASSES": 3, "INFERENCE_TH_TEST": 0.05, "NMS_TH": 0.6})
    assert demo.model_score_threshold(cfg) == pytest.approx(0.05)
