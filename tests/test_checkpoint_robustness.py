"""Loading that must not silently go wrong: another architecture's file, a half-matching file of a
recognised format, a corrupt or missing newest checkpoint on --resume, leftovers of a killed save,
file modes, the checkpoint layout and what --eval-only / the demo take from checkpoint metadata."""
import logging
import os
import stat

import pytest
import torch
from torch import nn

from common.checkpoint import DetectionCheckpointer, read_checkpoint_metadata
from common.checkpoint.formats import CHECKPOINT_FORMAT_REGISTRY, CheckpointFormat


class Net(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.backbone = nn.Conv2d(3, width, 1)
        self.head = nn.Linear(width, 2)


class OtherNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 3, 1)
        self.decoder = nn.Linear(3, 2)


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": OtherNet().state_dict(), "metadata": {"meta_architecture": "SparseRCNN"}}, path)
    with pytest.raises(ValueError, match=r"0 of the 4 tensors of this Net.*SparseRCNN.*decoder, encoder"):
        DetectionCheckpointer(Net()).load(str(path))


def test_checkpoint_matching_too_little_is_an_error_with_a_fraction(tmp_path):
    path = tmp_path / "half.pth"
    torch.save({"model": {k: v for k, v in Net().state_dict().items() if k.startswith("head")}}, path)
    DetectionCheckpointer(Net()).load(str(path))  # 2 of 4 found: a warning, as detectron2
    with pytest.raises(ValueError, match=r"2 of the 4 tensors.*50%.*at least 75%"):
        DetectionCheckpointer(Net(), min_matched_fraction=0.75).load(str(path))


def test_recognised_strict_format_must_load_completely(tmp_path):
    @CHECKPOINT_FORMAT_REGISTRY.register()
    class _TestAuthorsFormat(CheckpointFormat):
        name = "test authors' {'net': ...} file"
        priority = 99

        def matches(self, checkpoint, model_state):
            return set(checkpoint) == {"net", "epoch"}

        def convert(self, checkpoint, model_state):
            return {"model": {k.replace("trunk.", "backbone."): v for k, v in checkpoint["net"].items()},
                    "epoch": checkpoint["epoch"]}

    try:
        sd = {k.replace("backbone.", "trunk."): torch.randn_like(v) for k, v in Net().state_dict().items()}
        full, partial = tmp_path / "full.pth", tmp_path / "partial.pth"
        torch.save({"net": sd, "epoch": 7}, full)
        torch.save({"net": {k: v for k, v in sd.items() if k != "head.bias"}, "epoch": 7}, partial)
        model = Net()
        extra = DetectionCheckpointer(model).load(str(full))
        assert extra["epoch"] == 7 and torch.equal(model.backbone.weight, sd["trunk.weight"])
        with pytest.raises(ValueError, match=r"recognised as test authors'.*1 missing keys \['head.bias'\]"):
            DetectionCheckpointer(Net()).load(str(partial))
    finally:
        CHECKPOINT_FORMAT_REGISTRY._obj_map.pop("_TestAuthorsFormat")


def _save_run(tmp_path, iterations):
    model = Net()
    ckpt = DetectionCheckpointer(model, str(tmp_path))
    for it in iterations:
        with torch.no_grad():
            model.head.bias.fill_(float(it))
        ckpt.save("model_{:07d}".format(it), iteration=it)
    return ckpt


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, caplog):
    _save_run(tmp_path, [1, 3])
    newest = tmp_path / "model_0000003.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a crash of the filesystem
    model = Net()
    with caplog.at_level(logging.WARNING):
        extra = DetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1 and model.head.bias[0].item() == 1.0
    assert "model_0000003.pth" in caplog.text and "resuming from" in caplog.text

    os.remove(newest)  # last_checkpoint names a file that is gone
    model = Net()
    assert DetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 1

    (tmp_path / "model_0000001.pth").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        DetectionCheckpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)


def test_leftover_temporaries_are_removed_and_files_get_the_umask_mode(tmp_path):
    leftover = tmp_path / ".model_0000005.pth.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    old = os.umask(0o022)
    try:
        ckpt = _save_run(tmp_path, [2])
    finally:
        os.umask(old)
    assert not leftover.exists()
    for name in ("model_0000002.pth", "last_checkpoint"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert ckpt.get_checkpoint_file().endswith("model_0000002.pth")


def test_missing_checkpointables_are_reported(tmp_path):
    _save_run(tmp_path, [4])
    opt = torch.optim.SGD(Net().parameters(), lr=0.1)
    ckpt = DetectionCheckpointer(Net(), str(tmp_path), optimizer=opt)
    ckpt.resume_or_load("", resume=True)
    assert ckpt.missing_checkpointables == ["optimizer"]


def test_read_checkpoint_metadata(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"model": Net().state_dict(), "metadata": {"thing_classes": ["a", "b"]}}, path)
    assert read_checkpoint_metadata(str(path)) == {"thing_classes": ["a", "b"]}
    assert read_checkpoint_metadata(str(tmp_path / "nothing.pth")) == {}
    (tmp_path / "bad.pth").write_bytes(b"x")
    assert read_checkpoint_metadata(str(tmp_path / "bad.pth")) == {}
