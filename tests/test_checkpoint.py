"""DetectionCheckpointer: round trip, atomic writes, resume, .pkl/Caffe2/torchvision formats, safe loading."""
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from common.checkpoint import (
    DetectionCheckpointer,
    align_and_update_state_dicts,
    convert_basic_c2_names,
    convert_torchvision_to_d2,
)


class ConvNorm(nn.Conv2d):
    """A conv with its norm as submodule ``norm`` (detectron2 ``Conv2d`` naming)."""

    def __init__(self, cin, cout):
        super().__init__(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)


class Block(nn.Module):
    def __init__(self, cin, cout, shortcut=False):
        super().__init__()
        self.conv1 = ConvNorm(cin, cout)
        if shortcut:
            self.shortcut = ConvNorm(cin, cout)


class ToyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv1 = ConvNorm(3, 2)
        self.res2 = nn.Sequential(Block(2, 2))
        self.res3 = nn.Sequential(Block(2, 4, shortcut=True))


class ToyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = ToyResNet()
        self.head = nn.Linear(4, 3)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))


class Unsafe:
    """A custom class: loading it requires executing pickle code."""

    def __init__(self):
        self.x = 1


def _randomize(model):
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p))


def _assert_models_equal(m1, m2):
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_save_load_round_trip_and_last_checkpoint(tmp_path):
    model = ToyDetector()
    _randomize(model)
    ckpt = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.extra_data["metadata"] = {"thing_classes": ["rbc", "wbc"]}
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]

    other = ToyDetector()
    extra = DetectionCheckpointer(other).load(str(tmp_path / "model_0000009.pth"))
    _assert_models_equal(model, other)
    assert extra["iteration"] == 9
    assert extra["metadata"] == {"thing_classes": ["rbc", "wbc"]}

    # A checkpoint without metadata loads too.
    torch.save({"model": model.state_dict()}, tmp_path / "plain.pth")
    extra = DetectionCheckpointer(ToyDetector()).load(str(tmp_path / "plain.pth"))
    assert "metadata" not in extra


def test_save_is_atomic(tmp_path):
    model = ToyDetector()

    class Broken:
        def state_dict(self):
            return {"fn": lambda: None}  # torch.save fails while writing

    ckpt = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True, broken=Broken())
    ckpt.checkpointables.pop("broken")
    ckpt.save("model_good")
    ckpt.add_checkpointable("broken", Broken())
    with pytest.raises(Exception):
        ckpt.save("model_bad")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_good.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_good.pth"


def test_resume_restores_optimizer_scheduler_iteration(tmp_path):
    def make():
        torch.manual_seed(0)
        m = nn.Linear(2, 1)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
        return m, opt, sched

    m, opt, sched = make()
    for _ in range(3):
        m(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
    DetectionCheckpointer(m, str(tmp_path), save_to_disk=True, optimizer=opt, scheduler=sched).save(
        "model_0000002", iteration=2
    )

    m2, opt2, sched2 = make()
    ckpt2 = DetectionCheckpointer(m2, str(tmp_path), optimizer=opt2, scheduler=sched2)
    assert ckpt2.has_checkpoint()
    data = ckpt2.resume_or_load("ignored.pth", resume=True)
    assert data["iteration"] == 2
    _assert_models_equal(m, m2)
    assert sched2.last_epoch == 3
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)
    buf1 = opt.state[m.weight]["momentum_buffer"]
    assert torch.equal(opt2.state[m2.weight]["momentum_buffer"], buf1)

    # resume=False: only the model from the given path; optimizer untouched.
    m3, opt3, sched3 = make()
    DetectionCheckpointer(m3, str(tmp_path), optimizer=opt3).resume_or_load(
        str(tmp_path / "model_0000002.pth"), resume=False
    )
    _assert_models_equal(m, m3)
    assert len(opt3.state) == 0


def test_model_zoo_pkl_matching_heuristics(tmp_path):
    w = np.arange(8, dtype=np.float32).reshape(4, 2, 1, 1)
    data = {
        "model": {
            "res3.0.conv1.weight": w,
            "res3.0.shortcut.norm.running_var": np.full(4, 2.0, dtype=np.float32),
            "stem.fc.weight": np.zeros((2, 2), dtype=np.float32),
        },
        "__author__": "torchvision",
        "matching_heuristics": True,
    }
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    model = ToyDetector()
    DetectionCheckpointer(model).load(str(path))
    bu = model.backbone.bottom_up
    assert torch.equal(bu.res3[0].conv1.weight, torch.from_numpy(w))
    assert torch.equal(bu.res3[0].shortcut.norm.running_var, torch.full((4,), 2.0))


def test_caffe2_blobs_pkl(tmp_path):
    blobs = {
        "conv1_w": np.ones((2, 3, 1, 1), dtype=np.float32),
        "res_conv1_bn_s": np.full(2, 3.0, dtype=np.float32),
        "res_conv1_bn_b": np.full(2, 4.0, dtype=np.float32),
        "res2_0_branch2a_w": np.full((2, 2, 1, 1), 5.0, dtype=np.float32),
        "res2_0_branch2a_w_momentum": np.zeros((2, 2, 1, 1), dtype=np.float32),
        "res3_0_branch1_bn_riv": np.full(4, 6.0, dtype=np.float32),
    }
    path = tmp_path / "R-50-msra.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    model = ToyDetector()
    DetectionCheckpointer(model).load(str(path))
    bu = model.backbone.bottom_up
    assert torch.equal(bu.stem.conv1.weight, torch.ones(2, 3, 1, 1))
    assert torch.equal(bu.stem.conv1.norm.weight, torch.full((2,), 3.0))
    assert torch.equal(bu.stem.conv1.norm.bias, torch.full((2,), 4.0))
    assert torch.equal(bu.res2[0].conv1.weight, torch.full((2, 2, 1, 1), 5.0))
    assert torch.equal(bu.res3[0].shortcut.norm.running_var, torch.full((4,), 6.0))


def test_convert_basic_c2_names():
    assert convert_basic_c2_names(
        ["conv1_w", "res_conv1_bn_s", "res2_0_branch2a_bn_riv", "res3_0_branch1_w", "res4_5_branch2c_bn_rm", "pred_b"]
    ) == [
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "res2.0.conv1.norm.running_var",
        "res3.0.shortcut.weight",
        "res4.5.conv3.norm.running_mean",
        "linear.bias",
    ]


_TV_KEYS = {
    "conv1.weight": (2, 3, 1, 1),
    "bn1.weight": (2,),
    "bn1.running_mean": (2,),
    "layer1.0.conv1.weight": (2, 2, 1, 1),
    "layer1.0.bn1.bias": (2,),
    "layer2.0.downsample.0.weight": (4, 2, 1, 1),
    "layer2.0.downsample.1.running_var": (4,),
    "fc.weight": (10, 4),
}


def test_convert_torchvision_to_d2_names():
    converted = convert_torchvision_to_d2({k: None for k in _TV_KEYS})
    assert list(converted) == [
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "stem.conv1.norm.running_mean",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.bias",
        "res3.0.shortcut.weight",
        "res3.0.shortcut.norm.running_var",
        "stem.fc.weight",
    ]


def test_torchvision_pth_is_detected_and_converted(tmp_path):
    sd = {k: torch.full(s, float(i + 1)) for i, (k, s) in enumerate(_TV_KEYS.items())}
    torch.save(sd, tmp_path / "resnet50-toy.pth")
    model = ToyDetector()
    DetectionCheckpointer(model).load(str(tmp_path / "resnet50-toy.pth"))
    bu = model.backbone.bottom_up
    assert torch.equal(bu.stem.conv1.weight, sd["conv1.weight"])
    assert torch.equal(bu.stem.conv1.norm.running_mean, sd["bn1.running_mean"])
    assert torch.equal(bu.res2[0].conv1.norm.bias, sd["layer1.0.bn1.bias"])
    assert torch.equal(bu.res3[0].shortcut.norm.running_var, sd["layer2.0.downsample.1.running_var"])


def test_align_longest_suffix_shape_mismatch_and_ambiguity():
    model_sd = {
        "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(2, 2),
        "head.res2.0.conv1.weight": torch.zeros(3, 3),
        "head.cls.weight": torch.zeros(5),
    }
    ckpt = {
        "res2.0.conv1.weight": torch.ones(2, 2),  # matches both; the head one has another shape
        "bottom_up.res2.0.conv1.weight": torch.full((2, 2), 2.0),  # longer: wins for the backbone
        "cls.weight": torch.ones(4),  # shape mismatch -> skipped
    }
    out = align_and_update_state_dicts(model_sd, ckpt)
    assert torch.equal(out["backbone.bottom_up.res2.0.conv1.weight"], torch.full((2, 2), 2.0))
    assert "head.cls.weight" not in out
    assert "cls.weight" in out  # unmatched checkpoint entries pass through (reported as unexpected)

    ambiguous_model = {"a.weight": torch.zeros(2), "b.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="Ambiguity"):
        align_and_update_state_dicts(ambiguous_model, {"weight": torch.ones(2)})


def test_module_prefix_and_pixel_mean_silenced(tmp_path):
    src = ToyDetector()
    _randomize(src)
    sd = {"module." + k: v for k, v in src.state_dict().items() if k != "pixel_mean"}
    torch.save({"model": sd}, tmp_path / "ddp.pth")
    dst = ToyDetector()
    ckpt = DetectionCheckpointer(dst)
    checkpoint = ckpt._load_file(str(tmp_path / "ddp.pth"))
    incompatible = ckpt._load_model(checkpoint)
    assert incompatible.missing_keys == []
    assert torch.equal(dst.head.weight, src.head.weight)


def test_weights_only_refuses_custom_class_unless_opted_out(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    torch.save({"model": model.state_dict(), "extra": Unsafe()}, tmp_path / "unsafe.pth")
    with pytest.raises(pickle.UnpicklingError, match="weights_only=False"):
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(tmp_path / "unsafe.pth"))
    extra = DetectionCheckpointer(nn.Linear(2, 2), weights_only=False).load(str(tmp_path / "unsafe.pth"))
    assert isinstance(extra["extra"], Unsafe)
    monkeypatch.setenv("COMMON_UNSAFE_LOAD", "1")
    extra = DetectionCheckpointer(nn.Linear(2, 2)).load(str(tmp_path / "unsafe.pth"))
    assert isinstance(extra["extra"], Unsafe)


def test_restricted_pkl_unpickler(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"weight": np.zeros((2, 2), np.float32)}, "__author__": Unsafe()}, f)
    with pytest.raises(pickle.UnpicklingError, match="Unsafe"):
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(tmp_path / "evil.pkl"))
    DetectionCheckpointer(nn.Linear(2, 2), weights_only=False).load(str(tmp_path / "evil.pkl"))


def test_missing_file_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        DetectionCheckpointer(nn.Linear(2, 2)).load(str(tmp_path / "nothere.pth"))


def test_d2_torchvision_url_uses_cached_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    sd = {k: torch.full(s, float(i + 1)) for i, (k, s) in enumerate(_TV_KEYS.items())}
    torch.save(sd, hub / "resnet50-0676ba61.pth")
    model = ToyDetector()
    DetectionCheckpointer(model).load("detectron2://ImageNetPretrained/torchvision/R-50.pkl")
    assert torch.equal(model.backbone.bottom_up.res2[0].conv1.weight, sd["layer1.0.conv1.weight"])
