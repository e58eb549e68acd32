"""EventStorage and writers (detectron2 ``tests/test_events.py`` behaviours)."""
import json
import logging
import os

import pytest
import torch

from common.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_get_event_storage_outside_context_raises():
    with pytest.raises(AssertionError, match="EventStorage"):
        get_event_storage()


def test_scalars_history_latest_and_smoothing():
    with EventStorage(start_iter=10) as storage:
        assert get_event_storage() is storage
        for i, v in enumerate([1.0, 3.0, 2.0, 10.0]):
            storage.iter = 10 + i
            storage.put_scalar("loss", v)
            storage.put_scalar("lr", 0.1 * (i + 1), smoothing_hint=False)
        assert storage.history("loss").values() == [(1.0, 10), (3.0, 11), (2.0, 12), (10.0, 13)]
        assert storage.latest()["loss"] == (10.0, 13)
        smoothed = storage.latest_with_smoothing_hint(window_size=3)
        assert smoothed["loss"] == (3.0, 13)  # median of [3, 2, 10]
        assert smoothed["lr"][0] == pytest.approx(0.4)  # not smoothed
        with pytest.raises(AssertionError, match="smoothing_hint"):
            storage.put_scalar("lr", 1.0, smoothing_hint=True)
        with pytest.raises(KeyError, match="nope"):
            storage.history("nope")


def test_name_scope_and_put_scalars():
    with EventStorage() as storage:
        with storage.name_scope("val"):
            storage.put_scalars(a=1, b=torch.tensor(2.5))
        storage.put_scalar("a", 3)
        assert storage.latest()["val/a"] == (1.0, 0)
        assert storage.latest()["val/b"] == (2.5, 0)
        assert storage.latest()["a"] == (3.0, 0)


def test_json_writer_lines(tmp_path):
    path = tmp_path / "metrics.json"
    writer = JSONWriter(str(path), window_size=2)
    with EventStorage() as storage:
        for it in range(3):
            storage.iter = it
            storage.put_scalar("total_loss", float(it + 1))
        storage.put_scalar("lr", 0.5, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: no duplicate line
        storage.iter = 3
        storage.put_scalar("total_loss", 7.0)
        writer.write()
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"iteration": 2, "total_loss": 2.5, "lr": 0.5},  # median of last 2 = (2 + 3) / 2
        {"iteration": 3, "total_loss": 5.0},
    ]


def test_common_metric_printer_line():
    handler = _ListHandler()
    printer = CommonMetricPrinter(max_iter=100)
    printer.logger.addHandler(handler)
    printer.logger.setLevel(logging.INFO)
    try:
        with EventStorage() as storage:
            for it in range(5):
                storage.iter = it
                storage.put_scalars(total_loss=2.0, loss_cls=1.0, time=0.5, data_time=0.25)
                storage.put_scalar("lr", 0.01, smoothing_hint=False)
            printer.write()
            # ETA = median iteration time * remaining iterations = 0.5 * (100 - 4 - 1) s
            assert storage.latest()["eta_seconds"][0] == pytest.approx(47.5)
    finally:
        printer.logger.removeHandler(handler)
    (line,) = handler.messages
    assert "eta: 0:00:47" in line
    assert "iter: 4" in line
    assert "total_loss: 2" in line and "loss_cls: 1" in line
    assert "time: 0.5000" in line and "data_time: 0.2500" in line
    assert "lr: 0.01" in line


def test_tensorboard_writer_creates_event_file(tmp_path):
    writer = TensorboardXWriter(str(tmp_path))
    with EventStorage() as storage:
        storage.put_scalar("total_loss", 1.0)
        writer.write()
    writer.close()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
