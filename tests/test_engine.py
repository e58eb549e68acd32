"""Training loop, hooks and DefaultTrainer with toy models and in-memory data."""
import logging
import json
import math
import os

import pytest
import torch
from torch import nn

from common.checkpoint import DetectionCheckpointer
from common.config import get_cfg
from common.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, default_argument_parser, hooks
from common.engine.train_loop import HookBase
from common.utils.events import JSONWriter


class ToyModel(nn.Module):
    """Regress a scalar towards 1; returns a loss dict in training mode."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, batch):
        self.calls += 1
        x = torch.stack([b["x"] for b in batch])
        loss = ((self.w * x - 1.0) ** 2).mean()
        if self.nan_at is not None and self.calls > self.nan_at:
            loss = loss * float("nan")
        return {"loss_reg": loss, "loss_aux": 0.5 * loss}


def toy_loader():
    while True:
        yield [{"x": torch.ones(1)}, {"x": torch.ones(1)}]


def _sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr)


def test_simple_trainer_runs_and_writes_metrics():
    model = ToyModel()
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model))
    trainer.train(0, 5)
    assert trainer.iter == 5
    # Each step: w <- w - 0.1 * d(1.5 (w - 1)^2)/dw = w - 0.3 (w - 1)
    expected = 0.0
    for _ in range(5):
        expected = expected - 0.3 * (expected - 1.0)
    assert model.w.item() == pytest.approx(expected, rel=1e-5)
    hist = trainer.storage.history("total_loss").values()
    assert [it for _, it in hist] == [0, 1, 2, 3, 4]
    assert hist[0][0] == pytest.approx(1.5)  # 1.0 + 0.5 at w = 0
    assert "data_time" in trainer.storage.histories()


def test_nan_loss_raises_naming_iteration():
    model = ToyModel(nan_at=3)
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model))
    with pytest.raises(FloatingPointError, match=r"iteration=3") as e:
        trainer.train(0, 10)
    assert "loss_reg" in str(e.value)
    w_before_nan = model.w.item()
    assert math.isfinite(w_before_nan)  # the NaN step was not applied


def test_loss_must_be_dict_of_scalars():
    class Bad(ToyModel):
        def forward(self, batch):
            return {"loss": torch.ones(3, requires_grad=True)}

    model = Bad()
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model))
    with pytest.raises(ValueError, match="'loss' must be a scalar"):
        trainer.train(0, 1)


def test_amp_trainer_cpu_bfloat16():
    model = ToyModel()
    trainer = AMPTrainer(model, toy_loader(), _sgd(model))
    assert trainer.precision == torch.bfloat16
    assert not trainer.grad_scaler.is_enabled()
    trainer.train(0, 3)
    assert model.w.item() > 0.0
    assert "grad_scaler" in trainer.state_dict()


@pytest.mark.parametrize("total_iter,period,expected", [(30, 15, 2), (31, 15, 3), (20, 0, 1)])
def test_eval_hook_call_counts(total_iter, period, expected):
    model = ToyModel()
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model, lr=0.0))
    calls = []

    def eval_fn():
        calls.append(trainer.iter)
        return {"bbox": {"AP": 50.0}}

    trainer.register_hooks([hooks.EvalHook(period, eval_fn)])
    trainer.train(0, total_iter)
    assert len(calls) == expected
    assert trainer.storage.latest()["bbox/AP"][0] == 50.0


def test_eval_hook_rejects_non_numbers():
    model = ToyModel()
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model))
    trainer.register_hooks([hooks.EvalHook(0, lambda: {"bbox": {"AP": "high"}})])
    with pytest.raises(ValueError, match="nested dict of float"):
        trainer.train(0, 2)


def test_hooks_order_and_callbacks():
    events = []

    class Recorder(HookBase):
        def before_train(self):
            events.append("before_train")

        def before_step(self):
            events.append("before_step{}".format(self.trainer.iter))

        def after_step(self):
            events.append("after_step{}".format(self.trainer.iter))

        def after_train(self):
            events.append("after_train")

    model = ToyModel()
    trainer = SimpleTrainer(model, toy_loader(), _sgd(model))
    trainer.register_hooks([Recorder(), None, hooks.CallbackHook(after_step=lambda t: events.append("cb"))])
    trainer.train(2, 4)
    assert events == [
        "before_train", "before_step2", "after_step2", "cb", "before_step3", "after_step3", "cb", "after_train"
    ]


def test_lr_scheduler_checkpointer_and_writer_hooks(tmp_path):
    from common.solver import build_lr_scheduler

    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.WARMUP_ITERS = 0
    model = ToyModel()
    opt = _sgd(model)
    sched = build_lr_scheduler(cfg, opt)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True, optimizer=opt, scheduler=sched)
    trainer = SimpleTrainer(model, toy_loader(), opt)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(opt, sched),
            hooks.PeriodicCheckpointer(checkpointer, 4, max_to_keep=1),
            hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=4),
        ]
    )
    trainer.train(0, 10)
    # periodic files at iters 3 and 7; max_to_keep=1 deletes the first; final at 9
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000007.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [d["iteration"] for d in lines] == [3, 7, 9]
    assert lines[0]["lr"] == pytest.approx(0.1) and lines[1]["lr"] == pytest.approx(0.01)
    assert "time" in lines[-1] and "total_loss" in lines[-1]
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 9 and final["scheduler"]["last_epoch"] == 10


# ----------------------------------------------------------------------------- DefaultTrainer
class _ToyTrainer(DefaultTrainer):
    @classmethod
    def build_model(cls, cfg):
        return ToyModel()

    @classmethod
    def build_train_loader(cls, cfg):
        return toy_loader()


def _trainer_cfg(tmp_path, max_iter=6):
    from common.data import MetadataCatalog

    MetadataCatalog.get("h4_toy_train").set(thing_classes=["rbc", "wbc"])
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("h4_toy_train",)
    cfg.DATASETS.TEST = ()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_default_trainer_train_checkpoint_metadata_and_resume(tmp_path):
    trainer = _ToyTrainer(_trainer_cfg(tmp_path))
    trainer.resume_or_load(resume=False)
    assert trainer.train() == {}  # no DATASETS.TEST: the final evaluation has nothing to do
    files = sorted(os.listdir(tmp_path))
    assert {"model_0000002.pth", "model_0000005.pth", "model_final.pth", "last_checkpoint", "metrics.json"} <= set(files)
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["metadata"] == {
        "thing_classes": ["rbc", "wbc"],
        "meta_architecture": "GeneralizedRCNN",
    }
    assert final["iteration"] == 5
    # detectron2's layout: the optimizer and the hooks' states (LR scheduler) inside "trainer".
    assert set(final) >= {"model", "trainer"} and "optimizer" not in final and "scheduler" not in final
    assert final["trainer"]["iteration"] == 5
    assert set(final["trainer"]["_trainer"]) >= {"optimizer"}
    assert final["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 6
    w_final = trainer.model.w.item()

    resumed = _ToyTrainer(_trainer_cfg(tmp_path, max_iter=8))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6
    assert resumed.model.w.item() == pytest.approx(w_final)
    assert resumed.scheduler.last_epoch == 6
    resumed.train()
    assert resumed.iter == 8
    assert resumed.model.calls == 2


def test_default_trainer_dataset_name_errors(tmp_path):
    cfg = _trainer_cfg(tmp_path)
    cfg.DATASETS.TRAIN = "h4_toy_train"
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        _ToyTrainer(cfg)
    cfg.DATASETS.TRAIN = ()
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        _ToyTrainer(cfg)


def test_auto_scale_workers():
    cfg = get_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MAX_ITER = 1000
    cfg.SOLVER.STEPS = (600, 800)
    cfg.SOLVER.WARMUP_ITERS = 100
    cfg.freeze()
    new = DefaultTrainer.auto_scale_workers(cfg, 4)
    assert new.SOLVER.IMS_PER_BATCH == 8 and new.SOLVER.BASE_LR == pytest.approx(0.01)
    assert new.SOLVER.MAX_ITER == 2000 and tuple(new.SOLVER.STEPS) == (1200, 1600)
    assert new.SOLVER.WARMUP_ITERS == 200 and new.is_frozen()
    assert DefaultTrainer.auto_scale_workers(cfg, 8) is cfg


def test_default_argument_parser():
    args = default_argument_parser().parse_args(
        ["--config-file", "a.yaml", "--num-gpus", "2", "--resume", "MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.1"]
    )
    assert args.config_file == "a.yaml" and args.num_gpus == 2 and args.resume and not args.eval_only
    assert args.opts == ["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.1"]
    assert args.dist_url.startswith("tcp://127.0.0.1:")
    assert args.num_machines == 1 and args.machine_rank == 0


# ----------------------------------------------------------------------------- train_net.run
class _CountingEvaluator:
    """Counts processed images; returns them as a bbox metric (a toy DatasetEvaluator)."""

    def reset(self):
        self.n = 0

    def process(self, inputs, outputs):
        self.n += len(inputs)

    def evaluate(self):
        return {"bbox": {"AP": float(self.n)}}


class _RunTrainer(_ToyTrainer):
    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return [[{"x": torch.ones(1)}] for _ in range(3)]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from common.evaluation import DatasetEvaluator

        return type("Counting", (_CountingEvaluator, DatasetEvaluator), {})()


@pytest.fixture
def _restore_loggers():
    import logging

    names = ("common", "fvcore", "projects")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names}
    yield
    for n, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(level)


def test_run_train_then_eval_only(tmp_path, _restore_loggers):
    from common.data import MetadataCatalog
    from common.engine.train_net import run

    MetadataCatalog.get("h4_toy_train").set(thing_classes=["rbc", "wbc"])
    opts = [
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN", "('h4_toy_train',)",
        "DATASETS.TEST", "('h4_toy_test',)", "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "2", "SEED", "3",
    ]
    run((), _RunTrainer, argv=opts)
    assert {"config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"} <= set(os.listdir(tmp_path))
    evals = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines() if "bbox/AP" in line]
    assert [(d["iteration"], d["bbox/AP"]) for d in evals] == [(1, 3.0), (4, 3.0)]  # period 2; final one tagged max_iter
    run((), _RunTrainer, argv=["--eval-only"] + opts + ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")])


def test_precise_bn_recomputes_exact_statistics():
    class BNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(2, momentum=0.5)

        def forward(self, x):
            return {"loss": self.bn(x).pow(2).mean()}

    data = [torch.tensor([[1.0, 10.0], [3.0, 30.0]]), torch.tensor([[5.0, 50.0], [7.0, 70.0]])]

    def loader():
        while True:
            yield from data

    model = BNModel()
    trainer = SimpleTrainer(model, loader(), torch.optim.SGD(model.parameters(), lr=0.0))
    trainer.register_hooks([hooks.PreciseBN(0, model, loader(), num_iter=2)])
    trainer.train(0, 3)
    # True average over the 2 precise-BN batches, not the momentum-0.5 running estimate.
    assert model.bn.running_mean.tolist() == pytest.approx([4.0, 40.0])


# ----------------------------------------------------------------------------- resume layouts
def test_resume_reads_the_earlier_layout_and_warns_without_trainer_state(tmp_path, caplog):
    trainer = _ToyTrainer(_trainer_cfg(tmp_path))
    trainer.resume_or_load(resume=False)
    trainer.train()
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    # The earlier layout of this repository: optimizer/scheduler as top-level entries.
    old = {"model": final["model"], "optimizer": final["trainer"]["_trainer"]["optimizer"],
           "scheduler": final["trainer"]["hooks"]["LRScheduler"], "iteration": 5}
    torch.save(old, tmp_path / "model_final.pth")
    resumed = _ToyTrainer(_trainer_cfg(tmp_path, max_iter=8))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6 and resumed.scheduler.last_epoch == 6
    assert resumed.optimizer.state_dict()["param_groups"][0]["lr"] == trainer.optimizer.state_dict()["param_groups"][0]["lr"]

    # A weights-only file (e.g. a detectron2 model-zoo .pth) in OUTPUT_DIR: resume says what is lost.
    torch.save({"model": final["model"], "iteration": 5}, tmp_path / "model_final.pth")
    resumed = _ToyTrainer(_trainer_cfg(tmp_path, max_iter=8))
    with caplog.at_level(logging.WARNING):
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6
    assert "no trainer state (optimizer, scheduler missing)" in caplog.text
    assert "LR schedule (warm-up included) restarts" in caplog.text


def test_unsupported_tasks_are_refused_clearly():
    from common.data import build_detection_train_loader

    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("bccd_train",)
    cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(NotImplementedError, match="MODEL.KEYPOINT_ON True is not supported"):
        build_detection_train_loader(cfg)


def test_console_prefix_is_detectron2s(tmp_path):
    from common.utils.logger import _ColorfulFormatter, setup_logger

    logger = setup_logger(str(tmp_path), name="common")  # as default_setup does (a new cache key)
    formatters = [h.formatter for h in logger.handlers if isinstance(h.formatter, _ColorfulFormatter)]
    record = logging.LogRecord("common.engine.x", logging.INFO, __file__, 1, "hello", None, None)
    assert formatters and all("d2.engine.x" in f.format(record) for f in formatters)
