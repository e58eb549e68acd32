"""Shared ``train_net.py`` logic so that a project's script is a few lines.

A project writes::

    from common.engine.train_net import run
    from sparsercnn import add_sparsercnn_config
    if __name__ == "__main__":
        run([add_sparsercnn_config])

Every object passed to the launched processes (config adders, trainer class) must be a
module-level function/class so that it can be pickled.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, List, Optional, Sequence, Type

from common.utils import comm

import torch

from .defaults import (
    DefaultTrainer,
    _opts_keys,
    apply_checkpoint_metadata,
    check_output_dir,
    default_argument_parser,
    default_setup,
)
from .launch import launch

__all__ = ["setup", "main", "merged_config", "run"]

ConfigAdder = Callable[[Any], None]


def setup(args: Any, config_adders: Sequence[ConfigAdder] = ()) -> Any:
    """``get_cfg()`` -> project adders -> ``--config-file`` -> ``opts`` -> freeze -> ``default_setup``.

    Raises:
        whatever ``merge_from_file``/``merge_from_list`` raise for unknown keys or bad values.
    """
    cfg = merged_config(args, config_adders)
    with _buffered_logs("common") as records:
        _resolve_config(cfg, args)
    cfg.freeze()
    # Log the projects' own modules too (e.g. "sparsercnn.detector" when run as a script).
    packages = [getattr(add, "__module__", "").split(".")[0] for add in config_adders]
    default_setup(cfg, args, extra_loggers=[p for p in packages if p and p != "__main__"])
    for record in records:  # what was decided before the loggers existed
        logging.getLogger(record.name).handle(record)
    return cfg


@contextlib.contextmanager
def _buffered_logs(name: str):
    logger = logging.getLogger(name)
    records: List[logging.LogRecord] = []
    if logger.handlers:  # already set up: log as usual
        yield records
        return
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(min(old_level or logging.INFO, logging.INFO))
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _resolve_config(cfg: Any, args: Any) -> None:
    from common.data import register_datasets_from_config, resolve_num_classes

    # Datasets declared in the config exist in every process before anything reads them.
    register_datasets_from_config(cfg)
    if getattr(args, "eval_only", False):
        weights = cfg.MODEL.WEIGHTS
        if getattr(args, "resume", False):
            from common.checkpoint import DetectionCheckpointer

            ckpt = DetectionCheckpointer(torch.nn.Module(), save_dir=cfg.OUTPUT_DIR, save_to_disk=False)
            if ckpt.has_checkpoint():
                weights = ckpt.get_checkpoint_file()
        apply_checkpoint_metadata(cfg, weights, _opts_keys(args.opts))
    else:
        resolve_num_classes(cfg)
        if comm.is_main_process():
            check_output_dir(cfg, getattr(args, "resume", False))


def merged_config(args: Any, config_adders: Sequence[ConfigAdder] = ()) -> Any:
    """``get_cfg()`` -> project adders -> ``--config-file`` -> ``opts`` (not frozen, no side effect)."""
    from common.config import get_cfg

    cfg = get_cfg()
    for add in config_adders:
        add(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    return cfg


def main(
    args: Any,
    config_adders: Sequence[ConfigAdder] = (),
    trainer_cls: Type[DefaultTrainer] = DefaultTrainer,
) -> Any:
    """Evaluate ``MODEL.WEIGHTS`` (``--eval-only``) or train; returns the evaluation results."""
    from common.checkpoint import DetectionCheckpointer

    cfg = setup(args, config_adders)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, min_matched_fraction=cfg.MODEL.WEIGHTS_MIN_MATCHED_FRACTION
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            from common.evaluation import verify_results

            verify_results(cfg, res)
        return res

    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(
    config_adders: Sequence[ConfigAdder] = (),
    trainer_cls: Type[DefaultTrainer] = DefaultTrainer,
    argv: Optional[Sequence[str]] = None,
) -> None:
    """Parse the command line (``argv`` or ``sys.argv``) and launch :func:`main` on every process."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    use_cuda = None
    if args.num_gpus * args.num_machines > 1:
        # The backend follows MODEL.DEVICE of the merged config (YAML + opts), not the opts alone.
        device = str(merged_config(args, config_adders).MODEL.DEVICE)
        use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, tuple(config_adders), trainer_cls),
        use_cuda=use_cuda,
    )
