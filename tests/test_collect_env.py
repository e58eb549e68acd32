"""``python -m common.utils.collect_env``: detectron2's environment table."""
import subprocess
import sys

import torch
import torchvision

from common.utils import collect_env
from common.utils.env import collect_env_info


def _row_value(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + "  "):
            return line[len(name):].strip()
    raise AssertionError(f"row {name!r} missing from:\n{text}")


def test_cli_prints_the_table(repo_root):
    out = subprocess.run(
        [sys.executable, "-m", "common.utils.collect_env"], cwd=repo_root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # tabulate's default format: a dashed rule above and below the rows, then torch's build config.
    lines = text.splitlines()
    assert set(lines[0].replace(" ", "")) == {"-"}
    assert "PyTorch built with" in text
    assert _row_value(text, "PyTorch").startswith(torch.__version__ + " @")
    assert _row_value(text, "torchvision").startswith(torchvision.__version__ + " @")
    assert _row_value(text, "torchvision compiled ops") == "yes"
    assert _row_value(text, "GPU available") == str(torch.cuda.is_available())
    assert _row_value(text, "CUDA (torch build)") == str(torch.version.cuda)
    for name in ("Python", "numpy", "cuDNN", "fvcore", "pycocotools", "COCO evaluator backend (auto)"):
        assert _row_value(text, name)


def test_rows_and_env_alias_agree():
    rows = dict(collect_env.collect_env_rows())
    assert rows["numpy"] == __import__("numpy").__version__
    assert not rows["pycocotools"].startswith(("not installed", "unknown"))
    # the logger's entry point (default_setup) prints the same table
    assert _row_value(collect_env_info(), "PyTorch") == rows["PyTorch"]
    if torch.cuda.is_available():
        assert any(k.startswith("GPU 0") for k in rows)


def test_broken_torchvision_op_is_reported(monkeypatch):
    def broken_nms(*args, **kwargs):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torchvision.ops, "nms", broken_nms)
    status = collect_env.torchvision_ops_status()
    assert status.startswith("NO: RuntimeError: operator torchvision::nms does not exist")


def test_missing_package_is_reported():
    assert collect_env._version("surely_not_a_module_xyz") == "not installed"
