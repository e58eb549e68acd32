"""Training curves: ``tools/plot_metrics.py`` and ``PlotMetricsHook`` on real and hand-written metrics.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from e2e_helpers import load_train_net, register_bccd_subset

from common.engine import hooks
from common.engine.plot_hook import MAX_PER_CLASS_PANELS, PlotMetricsHook, load_metrics, metric_panels, plot_metrics
from common.engine.train_loop import TrainerBase
from common.utils.events import JSONWriter, EventStorage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import plot_metrics as plot_metrics_cli  # noqa: E402

ONENET = REPO / "projects" / "OneNet"


def _png_shape(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path)).shape


def test_real_bccd_run(tmp_path, bccd_root):
    """OneNet R-18 on 4 real BCCD images, 4 iterations, evaluation every 2: the hook writes
    curves.png with one panel per loss term, lr and evaluation metric."""
    from common.config import get_cfg
    from common.utils.env import seed_all_rng
    from projects.OneNet.onenet import add_onenet_config

    name = register_bccd_subset(bccd_root, tmp_path, "_t_plot_bccd4", n=4)
    cfg = get_cfg()
    add_onenet_config(cfg)
    cfg.merge_from_file(str(ONENET / "configs" / "onenet.bccd.res18.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)", "SOLVER.MAX_ITER", "4",
        "TEST.EVAL_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "171", "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "171", "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100",
        "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    base = load_train_net(ONENET).Trainer

    class Trainer(base):
        def build_hooks(self):
            ret = super().build_hooks()
            self.plot_hook = PlotMetricsHook(self.cfg.OUTPUT_DIR)
            return ret + [self.plot_hook]

    seed_all_rng(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    out = tmp_path / "out"
    assert (out / "curves.png").is_file()
    assert trainer.plot_hook.plotted_at[-1] == 4  # after the final evaluation (after_train)
    series = load_metrics(str(out / "metrics.json"))
    assert series["bbox/AP"][0] == [1, 4]  # the evaluation at iteration 2 and the final one
    fig = plot_metrics(str(out / "metrics.json"))
    titles = [ax.get_title() for ax in fig.axes]
    classes = ["Platelets", "RBC", "WBC"]  # metrics.json keys are sorted
    assert titles == (["total_loss", "loss_bbox", "loss_ce", "loss_giou", "lr"]
                      + [f"bbox/{m}" for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
                      + [f"bbox/AP-{c}" for c in classes])
    assert len(fig.axes) == 14
    # 14 panels in 4 columns -> 4 rows of 3.2 x 2.56 inches at 100 dpi
    assert _png_shape(out / "curves.png")[:2] == (1024, 1280)

    png = plot_metrics_cli.main([str(out), "--output", str(tmp_path / "cli.png"), "--ncols", "7"])
    assert _png_shape(png)[:2] == (512, 2240)


def _run_toy_trainer(out_dir: Path, max_iter: int, eval_period: int, writer_period: int) -> PlotMetricsHook:
    class Toy(TrainerBase):
        def run_step(self):
            self.storage.put_scalars(total_loss=10.0 / (self.iter + 1), loss_cls=5.0 / (self.iter + 1), lr=0.1)

    trainer = Toy()
    plot = PlotMetricsHook(str(out_dir))
    trainer.register_hooks([
        hooks.EvalHook(eval_period, lambda: {"bbox": {"AP": float(trainer.iter), "AP50": 2.0 * trainer.iter}}),
        hooks.PeriodicWriter([JSONWriter(str(out_dir / "metrics.json"))], period=writer_period),
        plot,
    ])
    trainer.train(0, max_iter)
    return plot


def test_hook_plots_after_each_evaluation_once_written(tmp_path):
    # evaluations after iterations 1, 3, 5 and at the end (7); metrics.json written at 2, 5, 6, 7:
    # the evaluation of 1 is plotted at 2, those of 3 and 5 at 5, the final one by after_train.
    plot = _run_toy_trainer(tmp_path, max_iter=7, eval_period=2, writer_period=3)
    assert plot.plotted_at == [2, 5, 7]
    series = load_metrics(str(tmp_path / "metrics.json"))
    # JSONWriter keeps the latest value of a key between writes: the evaluation of 3 is superseded by 5
    assert series["bbox/AP"] == ([1, 5, 7], [1.0, 5.0, 7.0])
    assert [t for t, _ in metric_panels(series)] == ["total_loss", "loss_cls", "lr", "bbox/AP", "bbox/AP50"]
    assert (tmp_path / "curves.png").is_file()


def test_load_metrics_resume_and_truncated_line(tmp_path):
    path = tmp_path / "metrics.json"
    for start, scale in ((0, 1.0), (3, 100.0)):  # a run to iteration 4, then a resume from 3
        writer = JSONWriter(str(path))
        with EventStorage(start) as storage:
            for it in range(start, start + 3 if start else 5):
                storage.iter = it
                storage.put_scalar("total_loss", scale * (it + 1), smoothing_hint=False)
                writer.write()
        writer.close()
    with open(path, "a") as f:
        f.write('{"iteration": 6, "total_lo')  # killed while writing
    iters, values = load_metrics(str(path))["total_loss"]
    assert iters == [0, 1, 2, 3, 4, 5]
    assert values == [1.0, 2.0, 3.0, 400.0, 500.0, 600.0]  # the resumed run's values win

    bad = tmp_path / "bad.json"
    bad.write_text('{"iteration": 0, "lr": 1}\nnot json\n{"iteration": 2, "lr": 1}\n')
    with pytest.raises(ValueError, match="bad.json, line 2"):
        load_metrics(str(bad))
    with pytest.raises(FileNotFoundError, match="is OUTPUT_DIR right"):
        load_metrics(str(tmp_path / "missing.json"))


def test_per_class_panels_are_grouped_for_many_classes():
    few = ["bbox/AP"] + [f"bbox/AP-c{i}" for i in range(3)]
    assert len(metric_panels(few)) == 4
    many = ["total_loss", "bbox/AP"] + [f"bbox/AP-c{i}" for i in range(80)]
    panels = metric_panels(many)
    assert [t for t, _ in panels] == ["total_loss", "bbox/AP", "bbox/AP-<class> (80 classes)"]
    assert len(panels[-1][1]) == 80 > MAX_PER_CLASS_PANELS
