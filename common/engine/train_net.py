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

from typing import Any, Callable, Optional, Sequence, Type

from common.utils import comm

from .defaults import DefaultTrainer, default_argument_parser, default_setup
from .launch import launch

__all__ = ["setup", "main", "run"]

ConfigAdder = Callable[[Any], None]


def setup(args: Any, config_adders: Sequence[ConfigAdder] = ()) -> Any:
    """``get_cfg()`` -> project adders -> ``--config-file`` -> ``opts`` -> freeze -> ``default_setup``.

    Raises:
        whatever ``merge_from_file``/``merge_from_list`` raise for unknown keys or bad values.
    """
    from common.config import get_cfg

    cfg = get_cfg()
    for add in config_adders:
        add(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    # Log the projects' own modules too (e.g. "sparsercnn.detector" when run as a script).
    packages = [getattr(add, "__module__", "").split(".")[0] for add in config_adders]
    default_setup(cfg, args, extra_loggers=[p for p in packages if p and p != "__main__"])
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
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
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
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, tuple(config_adders), trainer_cls),
    )
