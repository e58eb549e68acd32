"""tools/benchmark.py discovers the project config, builds the model and reports finite speeds."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import benchmark  # noqa: E402


def test_discover_finds_sparsercnn_adder():
    adders = benchmark.discover_config_adders(["SparseRCNN"])
    assert list(adders) == ["SparseRCNN.sparsercnn.add_sparsercnn_config"]
    with pytest.raises(ValueError, match="NoSuchProject"):
        benchmark.discover_config_adders(["NoSuchProject"])


def test_benchmark_tiny_cpu(capsys):
    row = benchmark.main([
        "--config-file", str(REPO / "projects/SparseRCNN/configs/sparsercnn.bccd.res18.yaml"),
        "--num-iter", "1", "--warmup", "0", "--device", "cpu",
        "SOLVER.IMS_PER_BATCH", "1", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.SparseRCNN.NUM_HEADS", "1", "MODEL.SparseRCNN.NUM_PROPOSALS", "8",
    ])
    out = capsys.readouterr().out
    assert "sparsercnn.bccd.res18.yaml" in out and "inference ms/img" in out
    assert row["device"] == "cpu" and 11 < row["params (M)"] < 14  # R-18 FPN + 1 narrow stage
    assert row["train it/s (bs 1)"] > 0 and row["inference ms/img"] > 0
