"""inference_on_dataset / DatasetEvaluators / testing helpers with a tiny deterministic model."""
import logging
import math

import pytest
import torch
from torch import nn

from common.config import get_cfg
from common.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_context,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)


class _Doubler(nn.Module):
    """Returns 2 * x for every input dict and records its mode and grad state per call."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.calls = []

    def forward(self, batch):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"y": self.w * d["x"]} for d in batch]


class _SumEvaluator(DatasetEvaluator):
    def __init__(self, key="sum"):
        self.key = key
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.total = 0.0
        self.count = 0

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            assert not out["y"].requires_grad
            self.total += float(out["y"])
            self.count += 1

    def evaluate(self):
        return {self.key: {"total": self.total, "count": self.count}}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def text(self):
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture()
def capture():
    """Records of a named logger, whatever setup_logger did to propagation of 'common'."""
    handlers = []

    def attach(name):
        logger = logging.getLogger(name)
        handler = _Records()
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        handlers.append((logger, handler, old_level))
        return handler

    yield attach
    for logger, handler, old_level in handlers:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _loader(n=4, batch=2):
    xs = [torch.tensor(float(i)) for i in range(n)]
    return [[{"x": x} for x in xs[i:i + batch]] for i in range(0, n, batch)]


def test_inference_on_dataset_runs_eval_mode_without_grad_and_restores_mode(capture):
    model = _Doubler().train()
    evaluator = _SumEvaluator()
    caplog = capture("common.evaluation.evaluator")
    res = inference_on_dataset(model, _loader(), evaluator)
    assert res == {"sum": {"total": 2.0 * (0 + 1 + 2 + 3), "count": 4}}
    assert model.calls == [(False, False), (False, False)]
    assert model.training  # restored
    assert evaluator.resets == 1
    text = caplog.text
    assert "Start inference on 2 batches" in text
    assert "Total inference time:" in text and "s / iter per device, on 1 devices" in text
    assert "Total inference pure compute time:" in text


def test_inference_on_dataset_without_evaluator_and_with_list():
    model = _Doubler()
    assert inference_on_dataset(model, _loader(), None) == {}
    res = inference_on_dataset(model, _loader(), [_SumEvaluator("a"), _SumEvaluator("b")])
    assert set(res) == {"a", "b"} and res["a"]["count"] == 4


def test_inference_on_plain_callable():
    # Non-Module callables (e.g. a TTA wrapper function) are accepted, no eval() needed.
    res = inference_on_dataset(lambda batch: [{"y": 3 * d["x"]} for d in batch], _loader(2, 1), _SumEvaluator())
    assert res["sum"]["total"] == 3.0


def test_dataset_evaluators_rejects_duplicate_keys():
    evs = DatasetEvaluators([_SumEvaluator("a"), _SumEvaluator("a")])
    evs.reset()
    with pytest.raises(ValueError, match="same key 'a'"):
        evs.evaluate()


def test_inference_context_restores_mode_on_error():
    model = _Doubler().train()
    with pytest.raises(RuntimeError):
        with inference_context(model):
            assert not model.training
            raise RuntimeError
    assert model.training


def test_print_csv_format_skips_per_category(capture):
    caplog = capture("common.evaluation.testing")
    print_csv_format({"bbox": {"AP": 50.0, "AP50": 75.12345, "AP-RBC": 1.0}, "misc": 3})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 50.0000,75.1235",
        "copypaste: misc=3",
    ]


def test_verify_results():
    cfg = get_cfg()
    results = {"bbox": {"AP": 40.0, "AP50": float("nan")}}
    assert verify_results(cfg, results)  # nothing expected
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 40.5, 1.0]]
    assert verify_results(cfg, results)
    for bad in (["bbox", "AP", 42.0, 1.0], ["bbox", "AP50", 0.0, 100.0], ["bbox", "APl", 40.0, 1.0]):
        cfg.TEST.EXPECTED_RESULTS = [bad]
        with pytest.raises(SystemExit):
            verify_results(cfg, results)


def test_flatten_results_dict():
    flat = flatten_results_dict({"bbox": {"AP": 1.0, "sub": {"x": 2}}, "t": 3})
    assert flat == {"bbox/AP": 1.0, "bbox/sub/x": 2, "t": 3}
    assert math.isnan(flatten_results_dict({"a": {"b": float("nan")}})["a/b"])
